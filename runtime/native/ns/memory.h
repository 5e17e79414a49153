// The memory calls of the ns addon (memory.c), added to its exports by ns.c.
#ifndef KUASAR_NS_MEMORY_H
#define KUASAR_NS_MEMORY_H

#include <node_api.h>

napi_status memory_register(napi_env env, napi_value exports);

#endif
