//! Deploys move forward: a host's agent never follows an older deploy than
//! one it followed before (across its restarts too: the newest is read
//! linearizably), and no deploy id is acknowledged to two writers (the
//! write is one txn conditional on the id being free).

use crate::World;

pub fn deploys_move_forward(w: &World) -> Result<(), String> {
    match w.deploy_violations.first() {
        Some(v) => Err(format!("deploys: {v}")),
        None => Ok(()),
    }
}
