// The share between the host and a guest, as both sides name it (Kuasar's guest contract where it has one).

/** The virtio mount tag the host exports the share with. */
export const SHARE_TAG = "kuasar";
/** Where the guest mounts the share. */
export const GUEST_SHARE = "/run/kuasar/state";
/** The pod's files the host writes at the top of the share: the guest's /etc gets them, and every container too. */
export const POD_FILES = ["hostname", "hosts", "resolv.conf"] as const;
/**
 * The guest's own, writable copies of POD_FILES: the share is read-only to the guest, and a container may edit its
 * /etc/hosts as in a runc pod, where the pod's containers share one file.
 */
export const GUEST_POD_FILES_DIR = "/run/kuasar/pod";
