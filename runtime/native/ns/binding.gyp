{
  "targets": [
    {
      "target_name": "ns",
      "sources": ["ns.c", "netlink.c", "memory.c"],
      "include_dirs": ["../include"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=gnu11"]
    }
  ]
}
