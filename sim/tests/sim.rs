//! Simulation scenarios. Each run prints its seed; `SIM_SEED=<n>` replays one
//! seed in `seeded_schedules`, `SIM_SEEDS=<count>` sweeps more (see README).

use sim::{Config, Op, run};

fn seed_base() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn check(config: &Config) -> sim::Report {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIM_LOG").unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
    eprintln!("sim seed {} ops {:?}", config.seed, config.ops);
    match run(config) {
        Ok(r) => r,
        Err(e) => panic!("seed {}: {e}", config.seed),
    }
}

#[test]
fn article_four_hosts_form_three() {
    let r = check(&Config::article(seed_base()));
    assert_eq!(r.final_members.len(), 3, "{r:?}");
}

#[test]
fn grow_3_5_1_3() {
    let mut c = Config::article(seed_base());
    c.hosts = 5;
    c.ops = vec![
        Op::Wait,
        Op::SetIdeal(5),
        Op::Wait,
        Op::Wait,
        Op::SetIdeal(1),
        Op::Wait,
        Op::Wait,
    ];
    c.final_ideal = 3;
    let r = check(&c);
    assert_eq!(r.final_members.len(), 3, "{r:?}");
}

#[test]
fn leader_crash_and_restart() {
    let mut c = Config::article(seed_base());
    c.ops = vec![
        Op::Wait,
        Op::Write,
        Op::Crash(1),
        Op::Wait,
        Op::Write,
        Op::Wait,
        Op::RestartAll,
        Op::Wait,
    ];
    check(&c);
}

#[test]
fn partition_and_heal() {
    let mut c = Config::article(seed_base());
    c.ops = vec![
        Op::Wait,
        Op::Write,
        Op::Partition(1, 2),
        Op::Partition(1, 3),
        Op::Write,
        Op::Wait,
        Op::RepairAll,
        Op::Write,
    ];
    check(&c);
}

#[test]
fn unnominate_then_renominate_same_address() {
    let mut c = Config::article(seed_base());
    c.hosts = 2;
    c.initial_ideal = 2;
    c.ops = vec![
        Op::Wait,
        Op::SetIdeal(1),
        Op::Wait,
        Op::Wait,
        Op::SetIdeal(2),
        Op::Wait,
    ];
    c.final_ideal = 2;
    let r = check(&c);
    assert_eq!(r.final_members, ["h1", "h2"]);
}

#[test]
fn seeded_schedules() {
    let count: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if std::env::var("SIM_SEED").is_ok() {
            1
        } else {
            3
        });
    let base = seed_base();
    for seed in base..base + count {
        check(&Config::from_seed(seed, 8));
    }
}

#[test]
fn same_seed_same_schedule() {
    let seed = seed_base();
    let a = Config::from_seed(seed, 8);
    let b = Config::from_seed(seed, 8);
    assert_eq!(a.schedule_hash(), b.schedule_hash());
    let (ra, rb) = (check(&Config::article(seed)), check(&Config::article(seed)));
    assert_eq!(ra.schedule_hash, rb.schedule_hash);
    // Execution is not bit-exact yet (openraft's election RNG is unseeded):
    // report, do not assert.
    eprintln!(
        "seed {seed}: trace hashes {:x} {:x} ({})",
        ra.trace_hash,
        rb.trace_hash,
        if ra.trace_hash == rb.trace_hash {
            "identical"
        } else {
            "differ"
        }
    );
}
