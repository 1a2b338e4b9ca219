//! Schedules chosen by proptest: hosts, ideal sizes and a sequence of
//! operations and faults. [`Config::from_seed`] draws one from a proptest
//! `TestRunner` whose RNG is seeded with the sim seed, so a printed seed
//! regenerates its schedule exactly; [`check_seed`] runs it and, on failure,
//! lets proptest shrink the schedule to a smaller one that still fails.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

use crate::{Config, Op};

/// One operation for a cluster of `hosts` (1-based host numbers).
fn op(hosts: usize) -> impl Strategy<Value = Op> {
    let host = 1..=hosts;
    prop_oneof![
        2 => (1u32..=5).prop_map(Op::SetIdeal),
        2 => Just(Op::Write),
        1 => (host.clone(), host.clone())
            .prop_filter("two distinct hosts", |(a, b)| a != b)
            .prop_map(|(a, b)| Op::Partition(a, b)),
        1 => Just(Op::RepairAll),
        1 => host.clone().prop_map(Op::Crash),
        1 => Just(Op::CrashLeader),
        1 => host.clone().prop_map(Op::Leave),
        1 => host.prop_map(Op::Join),
        1 => Just(Op::RestartAll),
        2 => Just(Op::Wait),
    ]
}

/// A whole schedule; `seed` only seeds turmoil and openraft, it is not drawn.
pub fn config(seed: u64) -> impl Strategy<Value = Config> {
    (3usize..=5)
        .prop_flat_map(|hosts| {
            (
                Just(hosts),
                // The last host may start late, as a volunteer joining later.
                any::<bool>(),
                1u32..=5,
                proptest::collection::vec(op(hosts), 4..=10),
                500u64..=4000,
                1u32..=5,
            )
        })
        .prop_map(
            move |(hosts, last_late, initial_ideal, ops, op_time_ms, final_ideal)| Config {
                seed,
                hosts,
                late: if last_late {
                    BTreeSet::from([hosts])
                } else {
                    BTreeSet::new()
                },
                initial_ideal,
                ops,
                op_time: Duration::from_millis(op_time_ms),
                converge_within: Duration::from_secs(120),
                final_ideal,
                bug: Default::default(),
            },
        )
}

fn runner(seed: u64, max_shrink_iters: u32) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    let config = RunnerConfig {
        max_shrink_iters,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

impl Config {
    /// The schedule proptest draws for `seed` (the same for the same seed).
    pub fn from_seed(seed: u64) -> Self {
        let mut r = runner(seed, 0);
        config(seed)
            .new_tree(&mut r)
            .expect("schedule strategy has no rejecting filter at the top")
            .current()
    }
}

/// Run `seed`'s schedule; on failure, shrink it (at most `max_shrink_iters`
/// more runs) and return the error of the smallest failing schedule found,
/// with that schedule.
pub fn check_seed(seed: u64, max_shrink_iters: u32) -> Result<crate::Report, String> {
    let mut r = runner(seed, max_shrink_iters);
    let tree = config(seed)
        .new_tree(&mut r)
        .expect("schedule strategy has no rejecting filter at the top");
    let first = tree.current();
    match crate::run(&first) {
        Ok(report) => Ok(report),
        Err(e) => {
            let shrunk = r.run_one(tree, |c| {
                crate::run(&c).map(|_| ()).map_err(TestCaseError::fail)
            });
            let smallest = match shrunk {
                Err(TestError::Fail(why, c)) => {
                    format!("\nsmallest failing schedule: {c:?}\n{why}")
                }
                _ => String::new(),
            };
            Err(format!("{e}{smallest}"))
        }
    }
}
