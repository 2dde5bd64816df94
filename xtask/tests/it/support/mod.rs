//! Shared scaffolding for the integration tests, by concern: the repository
//! harness (`repo`), the CI rule and the skip-or-fail gates (`gates`), the
//! locally built test images (`images`), the Docker engine (`docker`),
//! servers of a test's own and the test cluster (`servers`), strace
//! (`strace`), fingerprints (`hash`), the one-load-test-at-a-time lock
//! (`heavy`), the TypeScript and Python readers as
//! live services (`readers`) and the flows several test modules share
//! (`flows`). Everything here is used: the tests are one binary, so the
//! compiler reports a helper nothing calls.

pub mod docker;
pub mod flows;
pub mod gates;
pub mod hash;
pub mod heavy;
pub mod images;
pub mod readers;
pub mod repo;
pub mod servers;
pub mod strace;

pub use docker::{
    BACKEND, ComposeDown, docker, host_compose, remove_project_secrets, show_in_backend, show_lines,
};
pub use gates::{
    ci, cluster_or_skip, docker_or_skip, script_or_skip, skip_note, strace_or_skip, swarm_or_skip,
};
pub use hash::{sha12, sha256_hex};
pub use heavy::heavy_lock;
pub use images::{probe_image, reader_image, standin_image};
pub use repo::{
    DEVELOP_SECRETS, Run, TempRepo, env_map, env_value, set_env_value, source_root, tls_pair,
    unique, write_special_values,
};
pub use servers::cluster::load_into_cluster;
pub use strace::under_strace;
