{
  "targets": [
    {
      "target_name": "vsock",
      "sources": ["vsock.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    }
  ]
}
