//! The Kubernetes test cluster (`.ci/k8s/up.sh`): `kubectl` against it, and
//! the engine's images made available to its pods.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// `kubectl ARGS` (the cluster in KUBECONFIG), whatever its outcome.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl").args(args).output().unwrap()
}

/// `kubectl ARGS`, asserting success with kubectl's message: its stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let o = kubectl(args);
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Makes an image of the Docker engine available to the test cluster's pods
/// (they run `imagePullPolicy: Never`). The cluster `.ci/k8s/up.sh` starts runs
/// its own containerd, whose socket is `containerd/containerd.sock` beside
/// KUBECONFIG (or `K8S_CONTAINERD_ADDRESS`): `docker save IMAGE` is piped into
/// `ctr -n k8s.io images import -`, once per image and test binary. A cluster
/// with no such socket is taken to share the Docker engine's images.
pub fn load_into_cluster(image: &str) {
    use std::{collections::BTreeSet, process::Stdio, sync::Mutex};
    static LOADED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if loaded.contains(image) {
        return;
    }
    let address = std::env::var_os("K8S_CONTAINERD_ADDRESS")
        .map(PathBuf::from)
        .or_else(|| {
            let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG")?);
            Some(kubeconfig.parent()?.join("containerd/containerd.sock"))
        });
    let Some(address) = address.filter(|a| a.exists()) else {
        return;
    };
    let mut save = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save runs");
    let import = Command::new("ctr")
        .arg("--address")
        .arg(&address)
        .args(["-n", "k8s.io", "images", "import", "-"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .expect("ctr runs (apt-get install containerd)");
    let saved = save.wait().unwrap();
    assert!(
        saved.success() && import.status.success(),
        "loading {image} into the cluster's containerd ({}): {}",
        address.display(),
        String::from_utf8_lossy(&import.stderr)
    );
    loaded.insert(image.to_string());
}
