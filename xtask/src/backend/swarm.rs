//! Docker Swarm secrets (planned).

use anyhow::{Result, bail};

use super::{Backend, DeployOptions, Row, Step, Target};
use crate::resolve::Resolved;

pub struct Swarm;

impl Swarm {
    pub fn new() -> Result<Swarm> {
        bail!("the swarm backend is planned but not built yet; use --backend compose")
    }
}

impl Backend for Swarm {
    fn plan(&self, _t: &Target, _r: &Resolved) -> Result<Vec<Step>> {
        unreachable!()
    }
    fn apply(&self, _t: &Target, _r: &Resolved, _plan: &[Step]) -> Result<()> {
        unreachable!()
    }
    fn list(&self, _t: &Target, _r: Option<&Resolved>) -> Result<Vec<Row>> {
        unreachable!()
    }
    fn plan_remove(&self, _t: &Target, _names: &[String]) -> Result<Vec<Step>> {
        unreachable!()
    }
    fn remove(&self, _t: &Target, _plan: &[Step]) -> Result<()> {
        unreachable!()
    }
    fn deploy(&self, _t: &Target, _r: &Resolved, _opts: &DeployOptions) -> Result<()> {
        unreachable!()
    }
}
