// The rtnetlink calls of the ns addon (netlink.c), added to its exports by ns.c.
#ifndef KUASAR_NS_NETLINK_H
#define KUASAR_NS_NETLINK_H

#include <node_api.h>

napi_status netlink_register(napi_env env, napi_value exports);

#endif
