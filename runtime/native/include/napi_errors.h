// Error helpers shared by the agent's N-API addons. Define ADDON_NAME (a string literal) before including.
#ifndef KUASAR_NAPI_ERRORS_H
#define KUASAR_NAPI_ERRORS_H

#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// An Error whose code is the errno name (ENOENT, ...) and whose errno is -err, like Node's own; NULL if it could not be
// made (msg then holds its message).
static inline napi_value errno_error(napi_env env, int err, const char *what, char *msg, size_t msglen) {
  const char *name = strerrorname_np(err);
  if (name == NULL) name = "UNKNOWN";
  snprintf(msg, msglen, "%s: %s (%s)", what, name, strerror(err));
  napi_value code, message, error, errno_v;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok || napi_create_int32(env, -err, &errno_v) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_v) != napi_ok)
    return NULL;
  return error;
}

// Throws errno_error(err, what).
static inline napi_value throw_errno(napi_env env, int err, const char *what) {
  char msg[768];
  napi_value error = errno_error(env, err, what, msg, sizeof msg);
  if (error == NULL) {
    const char *name = strerrorname_np(err);
    napi_throw_error(env, name ? name : "UNKNOWN", msg);
  } else {
    napi_throw(env, error);
  }
  return NULL;
}

static inline bool get_args(napi_env env, napi_callback_info info, size_t argc, napi_value *argv) {
  size_t got = argc;
  if (napi_get_cb_info(env, info, &got, argv, NULL, NULL) != napi_ok) return false;
  if (got < argc) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME " addon: missing arguments");
    return false;
  }
  return true;
}

// Zeroed memory for a call's own state; NULL with an ENOMEM error thrown when there is none.
static inline void *alloc_or_throw(napi_env env, size_t size) {
  void *p = calloc(1, size);
  if (p == NULL) napi_throw_error(env, "ENOMEM", ADDON_NAME " addon: out of memory");
  return p;
}

// A string argument, copied to the C heap (the caller frees it); NULL with a TypeError thrown when v is not one.
static inline char *get_string(napi_env env, napi_value v, const char *name) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, ADDON_NAME " addon: %s must be a string", name);
    napi_throw_type_error(env, "EINVAL", msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL || napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    napi_throw_error(env, "ENOMEM", ADDON_NAME " addon: out of memory");
    return NULL;
  }
  return s;
}

#endif
