//! The choice of where the Kubernetes validator reads pods (`--pod-lookup`), apart from the
//! reading itself so that the configuration can name it without importing the cluster client.

/// How pods are looked up (`--pod-lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PodLookup {
    /// A local copy kept by a cluster-wide list and watch.
    #[default]
    Watch,
    /// A GET per validation.
    Get,
}
