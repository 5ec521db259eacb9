{
  "targets": [{
    "target_name": "naslora",
    "sources": ["native/naslora.cc", "native/dist.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node native/torch-paths.cjs include)"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "<!@(node native/torch-paths.cjs defines)"],
    "cflags!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
    "libraries": ["<!@(node native/torch-paths.cjs libs)", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10"]
  }]
}
