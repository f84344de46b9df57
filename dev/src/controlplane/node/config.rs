//! What the node runs, as files: containerd's config, the CNI network, the
//! kubelet's, kube-scheduler's and kube-proxy's configurations, and the
//! teardown script. Pure: paths and addresses in, text out.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The node's name; the kubelet's credentials are `system:node:<this>`.
pub const NODE_NAME: &str = "driftwarden-node";
/// The Linux bridge the Pods' veths are attached to.
pub const BRIDGE: &str = "dwnode0";
/// The Pods' addresses (host-local IPAM on the bridge).
pub const POD_SUBNET: &str = "10.244.0.0/24";
const POD_GATEWAY: &str = "10.244.0.1";
/// The sandbox image `build.sh node` packs; containerd never pulls it.
pub const SANDBOX_IMAGE: &str = "localhost/driftwarden-pause:1";

/// Host settings the kubelet (`vm.overcommit_memory`, `kernel.panic`, ...),
/// the bridge plugin (`ip_forward`) and kube-proxy change: saved before the
/// node starts, put back by the teardown.
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
];

/// Paths outside the node's directory that the kubelet, containerd's shims
/// and the CNI library create whatever they are told; the teardown removes
/// those that did not exist before the node started.
pub const HOST_PATHS: &[&str] =
    &["/var/lib/kubelet", "/var/log/containers", "/run/containerd", "/var/lib/cni", "/usr/libexec/kubernetes"];

/// Where one node keeps everything.
#[derive(Clone, Debug)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }
}

fn s(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

/// containerd (1.6, config version 2): CRI on, its state under the node's
/// directory, runc through the v2 shim, the CNI network below.
pub fn containerd(paths: &Paths) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (a container sandbox, as on CI machines) runc
  # cannot lower oom_score_adj below the caller's; never ask it to.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"#,
        root = s(paths.path("containerd/root")),
        state = s(paths.path("containerd/state")),
        socket = s(paths.containerd_socket()),
        runc = s(paths.path("containerd/runc")),
        cni_bin = CNI_BIN_DIR,
        cni_conf = s(paths.path("cni/net.d")),
    )
}

/// Debian's `containernetworking-plugins` put the plugins here.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// One bridge, addresses from host-local, no masquerading: Pods reach the
/// host (and the API server on it) and the host reaches them.
pub fn cni_network(paths: &Paths) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "driftwarden-node",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{POD_SUBNET}", "gateway": "{POD_GATEWAY}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{ipam}"
      }}
    }},
    {{"type": "loopback"}}
  ]
}}
"#,
        ipam = s(paths.path("cni/ipam")),
    )
}

/// Ports the node's components listen on (loopback, except the kubelet's
/// API, which the API server calls for logs and exec).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub kubelet: u16,
    pub kubelet_healthz: u16,
    pub proxy_healthz: u16,
    pub proxy_metrics: u16,
}

/// The kubelet: cgroupfs on the host's cgroup v1 or v2 (v1 needs
/// `failCgroupV1: false` since 1.35), no swap check, the API server's
/// webhook deciding who may use its API, everything it writes under the
/// node's directory, and disk thresholds low enough for a busy CI disk.
/// Its serving certificate is self-signed (in `--cert-dir`): the API server
/// does not check it unless told to.
pub fn kubelet(paths: &Paths, address: Ipv4Addr, ports: Ports, ca_file: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
address: {address}
port: {port}
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
readOnlyPort: 0
podLogsDir: {logs}
staticPodPath: ""
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: []
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
enforceNodeAllocatable: ["pods"]
makeIPTablesUtilChains: false
volumePluginDir: {dir}/kubelet/volume-plugins
"#,
        socket = s(paths.containerd_socket()),
        port = ports.kubelet,
        healthz = ports.kubelet_healthz,
        logs = s(paths.path("pod-logs")),
        dir = s(&paths.dir),
        ca = s(ca_file),
    )
}

/// The kubelet's command line.
pub fn kubelet_args(paths: &Paths, address: Ipv4Addr) -> Vec<String> {
    vec![
        format!("--config={}", s(paths.path("kubelet.yaml"))),
        format!("--kubeconfig={}", s(paths.path("kubelet.kubeconfig"))),
        format!("--root-dir={}", s(paths.path("kubelet"))),
        format!("--cert-dir={}", s(paths.path("kubelet/pki"))),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={address}"),
        "--v=0".into(),
    ]
}

/// kube-scheduler without leader election or a serving port.
pub fn scheduler(paths: &Paths) -> String {
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {}
leaderElection:
  leaderElect: false
",
        s(paths.path("kube-scheduler.kubeconfig"))
    )
}

pub fn scheduler_args(paths: &Paths) -> Vec<String> {
    vec![format!("--config={}", s(paths.path("kube-scheduler.yaml"))), "--secure-port=0".into(), "--v=0".into()]
}

/// kube-proxy in nftables mode: its rules are two tables of its own, which
/// the teardown deletes. Only Pods need it (for the `kubernetes` Service):
/// the API server reaches webhook Services at their endpoints.
pub fn proxy(paths: &Paths, ports: Ports) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: nftables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_SUBNET}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
",
        kubeconfig = s(paths.path("kube-proxy.kubeconfig")),
        healthz = ports.proxy_healthz,
        metrics = ports.proxy_metrics,
    )
}

pub fn proxy_args(paths: &Paths) -> Vec<String> {
    // `--proxy-mode` would be ignored next to `--config`: the mode is in the file.
    vec![format!("--config={}", s(paths.path("kube-proxy.yaml"))), "--v=0".into()]
}

/// The teardown, run by a watchdog when the node stops or when the process
/// that started it dies however it dies (the watchdog's stdin closes). It
/// uses no pipelines or command substitutions: their subshells would carry
/// this script's command line, which names the node's directory, and be
/// taken for the node's processes.
pub fn teardown_script(paths: &Paths, proxy_binary: &Path) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Leaves nothing of the node behind: processes (the kubelet, containerd and
# the shims that outlive it, the containers), mounts, network devices,
# kube-proxy's rules, cgroups, host settings, files.
set -u
dir={dir}
kill_mentioning() {{ # signal: every process whose command line names $dir
	local p pid args
	for p in /proc/[0-9]*; do
		pid=${{p#/proc/}}
		[[ $pid == "$$" ]] && continue
		mapfile -d '' args <"$p/cmdline" 2>/dev/null || continue
		[[ "${{args[*]}}" == *"$dir/"* ]] && kill "-$1" "$pid" 2>/dev/null
	done
}}
kill_containers() {{ # the Pods' processes, by their cgroups
	local procs pid
	for procs in /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
		/sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs \
		/sys/fs/cgroup/kubepods/cgroup.procs /sys/fs/cgroup/kubepods/*/cgroup.procs \
		/sys/fs/cgroup/kubepods/*/*/cgroup.procs /sys/fs/cgroup/kubepods/*/*/*/cgroup.procs; do
		[[ -f $procs ]] || continue
		while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$procs"
	done
}}
kill_mentioning TERM
for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5; done
kill_mentioning KILL
kill_containers
sleep 1
kill_containers

# Mounts under the node's directory (overlays, netns, tokens), newest first.
for _ in 1 2 3; do
	mounts=()
	while read -r _ mount _; do
		[[ $mount == "$dir" || $mount == "$dir/"* ]] && mounts+=("$mount")
	done </proc/mounts
	((${{#mounts[@]}})) || break
	for ((i = ${{#mounts[@]}} - 1; i >= 0; i--)); do
		umount "${{mounts[i]}}" 2>/dev/null || umount -l "${{mounts[i]}}" 2>/dev/null
	done
done

# The bridge and any veth still attached (a veth goes with its namespace).
for port in /sys/class/net/{BRIDGE}/brif/*; do
	[[ -e $port ]] && ip link delete "${{port##*/}}" 2>/dev/null
done
ip link delete {BRIDGE} 2>/dev/null

# kube-proxy's tables.
{proxy} --cleanup --config="$dir/kube-proxy.yaml" >/dev/null 2>&1
nft delete table ip kube-proxy 2>/dev/null
nft delete table ip6 kube-proxy 2>/dev/null

# cgroups the kubelet made, deepest first.
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
	[[ -d $root ]] && find "$root" -depth -type d -exec rmdir {{}} + 2>/dev/null
done

# Host settings as they were, and host paths that were not there before.
[[ -f $dir/sysctl-before.conf ]] && sysctl -q -p "$dir/sysctl-before.conf" >/dev/null 2>&1
while read -r path; do
	[[ -n $path ]] && rm -rf "$path"
done <"$dir/host-paths-created"

rm -rf "$dir"
"#,
        dir = s(&paths.dir),
        proxy = s(proxy_binary),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths { dir: "/tmp/node".into() }
    }

    #[test]
    fn every_component_keeps_its_state_under_the_node_directory() {
        let ports = Ports { kubelet: 1, kubelet_healthz: 2, proxy_healthz: 3, proxy_metrics: 4 };
        let containerd = containerd(&paths());
        for key in ["root =", "state =", "address =", "Root =", "conf_dir ="] {
            let line = containerd.lines().find(|l| l.trim_start().starts_with(key)).unwrap();
            assert!(line.contains("\"/tmp/node/"), "{line}");
        }
        let kubelet = kubelet(&paths(), Ipv4Addr::new(192, 0, 2, 2), ports, Path::new("/cp/ca.crt"));
        assert!(kubelet.contains("failCgroupV1: false") && kubelet.contains("volumePluginDir: /tmp/node/"));
        assert!(
            kubelet_args(&paths(), Ipv4Addr::new(192, 0, 2, 2)).iter().any(|a| a == "--cert-dir=/tmp/node/kubelet/pki")
        );
        assert!(cni_network(&paths()).contains("\"dataDir\": \"/tmp/node/cni/ipam\""));
        assert!(proxy(&paths(), ports).contains("mode: nftables"));
    }

    #[test]
    fn the_configurations_parse() {
        let ports = Ports { kubelet: 1, kubelet_healthz: 2, proxy_healthz: 3, proxy_metrics: 4 };
        let _: serde_json::Value = serde_json::from_str(&cni_network(&paths())).unwrap();
        for yaml in [
            kubelet(&paths(), Ipv4Addr::LOCALHOST, ports, Path::new("/ca.crt")),
            scheduler(&paths()),
            proxy(&paths(), ports),
        ] {
            let _: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        }
    }

    #[test]
    fn the_teardown_never_forks_a_copy_of_itself() {
        let script = teardown_script(&paths(), Path::new("/bin/kube-proxy"));
        assert!(!script.contains("$(") && !script.contains('`'), "command substitution in the teardown");
        for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(!line.contains(" | "), "pipeline in the teardown: {line}");
        }
        assert!(script.contains("dir=/tmp/node\n"));
    }
}
