{
  "targets": [
    {
      "target_name": "svd_native",
      "sources": ["src/addon.cc", "src/small_oc_conv.cc", "src/pointwise_affine.cc", "src/rank_bn.cc", "src/lanes_net.cc", "src/regularizer.cc", "src/batch_norm.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": [],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions"],
      "libraries": ["-ldnnl", "-fopenmp"]
    }
  ]
}
