// The test cluster's pause image (k8stest/pause:3.10): .ci/k8s/up.sh build.
module k8stest/pause

go 1.24.0
