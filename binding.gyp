{
  "targets": [{
    "target_name": "sosplice",
    "sources": ["src/binding.cc", "src/end_channel.cc", "src/errno_error.cc", "src/strays.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "cflags_cc!": ["-fno-exceptions"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
    },
    "conditions": [
      ["OS == 'linux'", { "sources": ["src/splice_linux.cc", "src/datagram_pump.cc"] }],
      ["OS == 'openbsd' or OS == 'freebsd'", { "sources": ["src/splice_bsd.cc", "src/bsd_end.cc"] }],
      ["OS == 'freebsd'", { "sources": ["src/datagram_pump.cc"] }]
    ]
  }]
}
