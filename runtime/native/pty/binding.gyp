{
  "targets": [
    {
      "target_name": "pty",
      "sources": ["pty.c"],
      "include_dirs": ["../include"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    }
  ]
}
