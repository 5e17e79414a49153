// The pod's network inside the guest over rtnetlink, in the calling thread's network namespace (the VM's): links,
// addresses, routes and permanent neighbours. Not busybox `ip`: each spawn of it cost about 0.1 s under TCG, and a
// pod's start took several; nor can `ip` add a neighbour. Each call is one request and its ack on a fresh socket.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADDON_NAME "ns"
#include "napi_errors.h"
#include "netlink.h"

// A header, the largest fixed part and a few attributes of at most 16 bytes each.
#define REQ_SIZE 256

struct req {
  _Alignas(struct nlmsghdr) char buf[REQ_SIZE];
};

static struct nlmsghdr *start(struct req *r, unsigned short type, unsigned short flags, size_t fixed) {
  memset(r->buf, 0, sizeof r->buf);
  struct nlmsghdr *n = (struct nlmsghdr *)r->buf;
  n->nlmsg_len = NLMSG_LENGTH(fixed);
  n->nlmsg_type = type;
  n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
  n->nlmsg_seq = 1;
  return n;
}

// Appends an attribute; every request here has room for all of its attributes (REQ_SIZE), which the check keeps so.
static void add_attr(struct req *r, unsigned short type, const void *data, size_t len) {
  struct nlmsghdr *n = (struct nlmsghdr *)r->buf;
  if (NLMSG_ALIGN(n->nlmsg_len) + RTA_SPACE(len) > sizeof r->buf) abort();
  struct rtattr *rta = (struct rtattr *)(r->buf + NLMSG_ALIGN(n->nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = RTA_LENGTH(len);
  memcpy(RTA_DATA(rta), data, len);
  n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

// Sends the request and reads its ack: 0 or an errno.
static int talk(struct req *r) {
  struct nlmsghdr *n = (struct nlmsghdr *)r->buf;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return errno;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  int err = 0;
  if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    err = errno;
  } else {
    _Alignas(struct nlmsghdr) char buf[1024];
    ssize_t got;
    do got = recv(fd, buf, sizeof buf, 0);
    while (got < 0 && errno == EINTR);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (got < 0) err = errno;
    else if (!NLMSG_OK(h, (size_t)got) || h->nlmsg_type != NLMSG_ERROR) err = EPROTO;
    else err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
  }
  close(fd);
  return err;
}

// An address of family (AF_INET or AF_INET6) into addr (16 bytes); its length, or 0 when s is not one.
static size_t parse_ip(int family, const char *s, unsigned char addr[16]) {
  if (inet_pton(family, s, addr) != 1) return 0;
  return family == AF_INET ? 4 : 16;
}

// An IPv4 or IPv6 address: its family, with its bytes in addr and their count in alen; 0 when s is neither.
static int parse_any_ip(const char *s, unsigned char addr[16], size_t *alen) {
  if ((*alen = parse_ip(AF_INET, s, addr))) return AF_INET;
  if ((*alen = parse_ip(AF_INET6, s, addr))) return AF_INET6;
  return 0;
}

// "aa:bb:cc:dd:ee:ff", exactly: sscanf's %x would also take signs and 0x prefixes.
static bool parse_mac(const char *s, unsigned char mac[6]) {
  if (strlen(s) != 17) return false;
  for (int i = 0; i < 6; i++) {
    const char *p = s + 3 * i;
    if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) || (i < 5 && p[2] != ':')) return false;
    char hex[3] = {p[0], p[1], 0};
    mac[i] = (unsigned char)strtoul(hex, NULL, 16);
  }
  return true;
}

// The index of link dev, or 0 with errno set (ENODEV for a name too long to be one).
static int link_index(const char *dev) {
  if (strlen(dev) >= IF_NAMESIZE) {
    errno = ENODEV;
    return 0;
  }
  return (int)if_nametoindex(dev);
}

#define MAX_STRINGS 5

// The string arguments of a call, freed together.
struct strings {
  char *s[MAX_STRINGS];
};

static void free_strings(struct strings *st) {
  for (int i = 0; i < MAX_STRINGS; i++) free(st->s[i]);
}

static bool get_strings(napi_env env, napi_value *argv, const char *const *names, int count, struct strings *st) {
  for (int i = 0; i < count; i++)
    if ((st->s[i] = get_string(env, argv[i], names[i])) == NULL) return false;
  return true;
}

static bool get_int(napi_env env, napi_value v, int32_t min, int32_t max, const char *name, int32_t *out) {
  if (napi_get_value_int32(env, v, out) == napi_ok && *out >= min && *out <= max) return true;
  char msg[128];
  snprintf(msg, sizeof msg, ADDON_NAME " addon: %s must be an integer from %d to %d", name, min, max);
  napi_throw_type_error(env, "EINVAL", msg);
  return false;
}

static napi_value done(napi_env env, int err, const char *what) {
  if (err != 0) return throw_errno(env, err, what);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

// neighReplace(ip, mac, dev): a permanent neighbour entry for ip (IPv4 or IPv6) at mac on link dev, created or
// replaced.
static napi_value js_neigh_replace(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct strings st = {0};
  napi_value result = NULL;
  static const char *const names[] = {"ip", "mac", "dev"};
  if (!get_args(env, info, 3, argv) || !get_strings(env, argv, names, 3, &st)) goto out;
  const char *ip = st.s[0], *mac_s = st.s[1], *dev = st.s[2];
  char what[160];
  snprintf(what, sizeof what, "neighbour %.46s lladdr %.17s dev %.16s", ip, mac_s, dev);
  unsigned char addr[16], mac[6];
  size_t alen;
  int family = parse_any_ip(ip, addr, &alen);
  if (family == 0 || !parse_mac(mac_s, mac)) {
    result = throw_errno(env, EINVAL, what);
    goto out;
  }
  int ifindex = link_index(dev);
  if (ifindex == 0) {
    result = throw_errno(env, errno, what);
    goto out;
  }
  struct req r;
  struct nlmsghdr *n = start(&r, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, sizeof(struct ndmsg));
  struct ndmsg *nd = NLMSG_DATA(n);
  nd->ndm_family = (unsigned char)family;
  nd->ndm_ifindex = ifindex;
  nd->ndm_state = NUD_PERMANENT;
  add_attr(&r, NDA_DST, addr, alen);
  add_attr(&r, NDA_LLADDR, mac, 6);
  result = done(env, talk(&r), what);
out:
  free_strings(&st);
  return result;
}

// linkSet(dev, up, name, mtu): brings link dev up (1) or down (0) or leaves it (-1), renames it (name "" keeps its
// name) and sets its MTU (0 keeps it). The kernel renames only a link that is down.
static napi_value js_link_set(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct strings st = {0};
  napi_value result = NULL;
  int32_t up, mtu;
  static const char *const names[] = {"dev"};
  if (!get_args(env, info, 4, argv) || !get_strings(env, argv, names, 1, &st) ||
      !get_int(env, argv[1], -1, 1, "up", &up) || (st.s[1] = get_string(env, argv[2], "name")) == NULL ||
      !get_int(env, argv[3], 0, 65535, "mtu", &mtu))
    goto out;
  const char *dev = st.s[0], *name = st.s[1];
  char what[160], mtu_s[16] = "";
  if (mtu > 0) snprintf(mtu_s, sizeof mtu_s, " mtu %d", mtu);
  snprintf(what, sizeof what, "link %.32s%s%s%.32s%s", dev, up < 0 ? "" : up ? " up" : " down", name[0] ? " name " : "",
           name, mtu_s);
  int ifindex = link_index(dev);
  if (ifindex == 0) {
    result = throw_errno(env, errno, what);
    goto out;
  }
  if (strlen(name) >= IF_NAMESIZE) {
    result = throw_errno(env, EINVAL, what);
    goto out;
  }
  struct req r;
  struct nlmsghdr *n = start(&r, RTM_NEWLINK, 0, sizeof(struct ifinfomsg));
  struct ifinfomsg *ifi = NLMSG_DATA(n);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = ifindex;
  if (up >= 0) {
    ifi->ifi_change = IFF_UP;
    ifi->ifi_flags = up ? IFF_UP : 0;
  }
  if (name[0] != '\0') add_attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
  if (mtu > 0) {
    uint32_t m = (uint32_t)mtu;
    add_attr(&r, IFLA_MTU, &m, sizeof m);
  }
  result = done(env, talk(&r), what);
out:
  free_strings(&st);
  return result;
}

// addrAdd(dev, ip, prefixLen): the address ip/prefixLen (IPv4 or IPv6) on link dev, added or, when it is there
// already, replaced (a repeated UpdateInterfaces is not an error).
static napi_value js_addr_add(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct strings st = {0};
  napi_value result = NULL;
  int32_t prefix;
  static const char *const names[] = {"dev", "ip"};
  if (!get_args(env, info, 3, argv) || !get_strings(env, argv, names, 2, &st) ||
      !get_int(env, argv[2], 0, 128, "prefixLen", &prefix))
    goto out;
  const char *dev = st.s[0], *ip = st.s[1];
  char what[128];
  snprintf(what, sizeof what, "address %.46s/%d dev %.16s", ip, prefix, dev);
  unsigned char addr[16];
  size_t alen;
  int family = parse_any_ip(ip, addr, &alen);
  if (family == 0 || (size_t)prefix > alen * 8) {
    result = throw_errno(env, EINVAL, what);
    goto out;
  }
  int ifindex = link_index(dev);
  if (ifindex == 0) {
    result = throw_errno(env, errno, what);
    goto out;
  }
  struct req r;
  struct nlmsghdr *n = start(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, sizeof(struct ifaddrmsg));
  struct ifaddrmsg *ifa = NLMSG_DATA(n);
  ifa->ifa_family = (unsigned char)family;
  ifa->ifa_prefixlen = (unsigned char)prefix;
  ifa->ifa_index = (unsigned)ifindex;
  add_attr(&r, IFA_LOCAL, addr, alen);
  add_attr(&r, IFA_ADDRESS, addr, alen);
  result = done(env, talk(&r), what);
out:
  free_strings(&st);
  return result;
}

// routeReplace(family, dst, prefixLen, gateway, dev, src, linkScope): a unicast route in the main table to dst/prefixLen
// (dst "" is the default route), created or replaced; gateway, dev and src ("" for none) as `ip route` takes them.
// family is 4 or 6; linkScope gives the route scope link, as `ip` does itself for a route without a gateway.
static napi_value js_route_replace(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  struct strings st = {0};
  napi_value result = NULL;
  int32_t fam, prefix;
  bool link_scope;
  if (!get_args(env, info, 7, argv) || !get_int(env, argv[0], 4, 6, "family", &fam) ||
      (st.s[0] = get_string(env, argv[1], "dst")) == NULL || !get_int(env, argv[2], 0, 128, "prefixLen", &prefix) ||
      (st.s[1] = get_string(env, argv[3], "gateway")) == NULL || (st.s[2] = get_string(env, argv[4], "dev")) == NULL ||
      (st.s[3] = get_string(env, argv[5], "src")) == NULL)
    goto out;
  if (napi_get_value_bool(env, argv[6], &link_scope) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME " addon: linkScope must be a boolean");
    goto out;
  }
  const char *dst = st.s[0], *gw = st.s[1], *dev = st.s[2], *src = st.s[3];
  char what[256];
  snprintf(what, sizeof what, "route %.46s/%d%s%.46s%s%.16s%s%.46s", dst[0] ? dst : "default", prefix,
           gw[0] ? " via " : "", gw, dev[0] ? " dev " : "", dev, src[0] ? " src " : "", src);
  int family = fam == 4 ? AF_INET : fam == 6 ? AF_INET6 : 0;
  unsigned char d[16], g[16], s[16];
  size_t alen = family == AF_INET ? 4 : 16;
  if (family == 0 || (size_t)prefix > alen * 8 || (dst[0] && !parse_ip(family, dst, d)) || (!dst[0] && prefix) ||
      (gw[0] && !parse_ip(family, gw, g)) || (src[0] && !parse_ip(family, src, s))) {
    result = throw_errno(env, EINVAL, what);
    goto out;
  }
  int ifindex = 0;
  if (dev[0] && (ifindex = link_index(dev)) == 0) {
    result = throw_errno(env, errno, what);
    goto out;
  }
  struct req r;
  struct nlmsghdr *n = start(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, sizeof(struct rtmsg));
  struct rtmsg *rt = NLMSG_DATA(n);
  rt->rtm_family = (unsigned char)family;
  rt->rtm_dst_len = (unsigned char)prefix;
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = RTPROT_BOOT;
  rt->rtm_scope = link_scope ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  rt->rtm_type = RTN_UNICAST;
  if (dst[0]) add_attr(&r, RTA_DST, d, alen);
  if (gw[0]) add_attr(&r, RTA_GATEWAY, g, alen);
  if (ifindex) add_attr(&r, RTA_OIF, &ifindex, sizeof ifindex);
  if (src[0]) add_attr(&r, RTA_PREFSRC, s, alen);
  result = done(env, talk(&r), what);
out:
  free_strings(&st);
  return result;
}

napi_status netlink_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"neighReplace", NULL, js_neigh_replace, NULL, NULL, NULL, napi_enumerable, NULL},
      {"linkSet", NULL, js_link_set, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addrAdd", NULL, js_addr_add, NULL, NULL, NULL, napi_enumerable, NULL},
      {"routeReplace", NULL, js_route_replace, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
