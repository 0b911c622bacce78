//! `cargo xtask bench`: the same load scenarios against our broker and, where installed,
//! Mosquitto and rumqttd, one broker at a time; a table on the terminal, a CSV and an SVG chart
//! under `target/bench/`. The load generator is our own client (`client`), and for the fan rows
//! also `rumqttc` (`rumqttc_client`, the rows named "(rumqttc)": `--only rumqttc`).

// xtask is a plain synchronous program (the load generator has its own runtime, and these
// calls run outside it): blocking file access and sleeps are fine here.
#![allow(clippy::disallowed_methods)]

mod brokers;
mod client;
mod report;
mod rumqttc_client;
mod scenarios;
mod sink;
mod tally;

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mqtt_packets::QoS;

use brokers::{Broker, Kind};
use scenarios::{Measured, Scenario, WINDOW};

/// Options of a run.
struct Settings {
    quick: bool,
    passes: usize,
    brokers: Vec<Kind>,
    /// Only the scenarios whose name contains one of these.
    only: Vec<String>,
}

/// Reads `--quick`, `--passes N`, `--brokers a,b` and `--only TEXT` (repeatable: scenarios whose
/// name contains one of the texts, e.g. `--only "fan-out" --only idle`).
fn settings(args: &[String]) -> Result<Settings> {
    let mut settings = Settings {
        quick: false,
        passes: 3,
        brokers: vec![Kind::Mochi, Kind::Mosquitto, Kind::Rumqttd],
        only: Vec::new(),
    };
    let mut passes_given = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => settings.quick = true,
            "--passes" => {
                passes_given = true;
                settings.passes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .context("--passes needs a number above 0")?;
            }
            "--only" => settings
                .only
                .push(args.next().context("--only needs a text")?.clone()),
            "--brokers" => {
                let list = args.next().context("--brokers needs a list")?;
                settings.brokers = list
                    .split(',')
                    .map(|name| match name {
                        "mochi" => Ok(Kind::Mochi),
                        "baseline" => Ok(Kind::Baseline),
                        "mosquitto" => Ok(Kind::Mosquitto),
                        "rumqttd" => Ok(Kind::Rumqttd),
                        other => bail!("unknown broker {other:?}"),
                    })
                    .collect::<Result<_>>()?;
            }
            other => bail!("bench: unknown argument {other:?}"),
        }
    }
    if settings.quick && !passes_given {
        settings.passes = 1;
    }
    Ok(settings)
}

/// The scenarios of a run, in table order; `quick` scales the counts down for a one-minute run.
fn scenarios(quick: bool) -> Vec<Scenario> {
    let scale = |full: usize, quick_count: usize| if quick { quick_count } else { full };
    // Latency first, on a quiet machine: right after heavy rows, every broker's tail latency can
    // be several times longer (`--only "4 KiB" --only latency --brokers mochi,mosquitto`, on
    // 2026-11-27: p99 4.9 ms for mochi and 6.1 ms for Mosquitto, against 0.3-0.8 ms for both
    // with the latency row alone), which measures the machine, not the broker.
    let mut list = vec![Scenario::Latency {
        rate: 1_000,
        seconds: if quick { 3 } else { 10 },
    }];
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        list.push(Scenario::Stresser {
            clients: 10,
            messages: scale(10_000, 2_000),
            qos,
            payload: 64,
            window: WINDOW,
        });
    }
    list.push(Scenario::Stresser {
        clients: 10,
        messages: scale(10_000, 1_000),
        qos: QoS::AtMostOnce,
        payload: 4096,
        window: WINDOW,
    });
    // Fan-in 10 -> 1 and fan-out 1 -> 10: 64 B at QoS 0, 1 and 2, then 16 B and 4 KiB at QoS 0.
    // `messages` is per publisher: fan-in moves 10 x that, fan-out delivers 10 x that. QoS 2
    // (four packets a message, acknowledged one subscriber connection at a time) and 4 KiB
    // (200 MB per run) carry fewer, so that a slow peer stays within a few seconds a row.
    let fans = [
        (QoS::AtMostOnce, 64, scale(20_000, 2_000)),
        (QoS::AtLeastOnce, 64, scale(20_000, 2_000)),
        (QoS::ExactlyOnce, 64, scale(10_000, 1_000)),
        (QoS::AtMostOnce, 16, scale(20_000, 2_000)),
        (QoS::AtMostOnce, 4096, scale(5_000, 500)),
    ];
    for (qos, payload, messages) in fans {
        list.push(Scenario::FanIn {
            publishers: 10,
            messages,
            qos,
            payload,
        });
        list.push(Scenario::FanOut {
            subscribers: 10,
            messages,
            qos,
            payload,
        });
        // The same rows with rumqttc clients (`--only rumqttc`): what users' clients see.
        if payload == 64 {
            for (publishers, subscribers) in [(10, 1), (1, 10)] {
                list.push(Scenario::Rumqttc {
                    publishers,
                    subscribers,
                    messages,
                    qos,
                    payload,
                });
            }
        }
    }
    // Fan-in at 1 KiB, the row of issue 18's table (17 % delivered before end-to-end flow
    // control, with the queue limits at their defaults).
    list.push(Scenario::Rumqttc {
        publishers: 10,
        subscribers: 1,
        messages: scale(20_000, 2_000),
        qos: QoS::AtMostOnce,
        payload: 1024,
    });
    list.push(Scenario::Connections {
        count: scale(10_000, 2_000),
    });
    // mqtt-stresser's own mode: one message at a time per client (one write each), compared
    // on the per-client median publish rate.
    let clients: &[usize] = if quick { &[10] } else { &[2, 10, 100] };
    for &clients in clients {
        list.push(Scenario::Stresser {
            clients,
            messages: scale(10_000, 1_000),
            qos: QoS::AtMostOnce,
            payload: 64,
            window: 1,
        });
    }
    if !quick {
        list.push(Scenario::FanOut {
            subscribers: 1_000,
            messages: 1_000,
            qos: QoS::AtMostOnce,
            payload: 64,
        });
    }
    list
}

/// The name of the one-at-a-time rows' reference in the results: publishers writing to a sink
/// that only reads, with no broker (see `sink::sink_reference`). Not a broker.
pub(crate) const SINK: &str = "sink";

/// CPU seconds used by a process so far (user + system), from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, in parentheses).
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// One row of results.
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) broker: &'static str,
    pub(crate) measured: Measured,
    pub(crate) broker_cpu: f64,
    pub(crate) generator_cpu: f64,
}

pub(crate) fn bench(root: &Path, args: &[String]) -> Result<()> {
    let settings = settings(args)?;
    if cfg!(debug_assertions) {
        // The load generator must not be the bottleneck: run it from a release build.
        super::cargo(&["build", "--release", "-p", "xtask"])?;
        let status = std::process::Command::new(root.join("target/release/xtask"))
            .arg("bench")
            .args(args)
            .status()
            .context("could not run the release xtask")?;
        if !status.success() {
            bail!("the benchmark failed ({status})");
        }
        return Ok(());
    }
    // Only when our current build is to run: `--brokers baseline,mosquitto,rumqttd` leaves the
    // work tree's broker crates alone (they may be half-way through a change).
    if settings.brokers.contains(&Kind::Mochi) {
        super::cargo(&["build", "--release", "-p", "mochi-mqtt", "--bin", "mochi"])?;
    }
    let brokers: Vec<Kind> = settings
        .brokers
        .iter()
        .copied()
        .filter(|kind| {
            let available = kind.available(root);
            if !available {
                println!("{}: not installed, skipped", kind.name());
            }
            available
        })
        .collect();
    for kind in &brokers {
        println!("{}: {}", kind.name(), kind.configuration());
    }
    let list: Vec<Scenario> = scenarios(settings.quick)
        .into_iter()
        .filter(|scenario| {
            let name = scenario.name();
            settings.only.is_empty() || settings.only.iter().any(|only| name.contains(only))
        })
        .collect();
    // Each one-at-a-time row also runs its sink reference once per pass.
    let references = list.iter().filter(|s| s.one_at_a_time().is_some()).count();
    let total = (list.len() * brokers.len() + references) * settings.passes;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut done = 0;
    let started = Instant::now();
    for scenario in &list {
        // Passes alternate between the brokers, so that a slow spell of the machine (a shared
        // VM is noisy) falls on all of them rather than on one broker's passes.
        let mut passes: Vec<Vec<(Measured, f64, f64)>> = vec![Vec::new(); brokers.len()];
        let mut reference: Vec<(Measured, f64, f64)> = Vec::new();
        for pass in 0..settings.passes {
            if let Some((clients, messages, payload)) = scenario.one_at_a_time() {
                progress(
                    done,
                    total,
                    &format!("{} on the sink (pass {})", scenario.name(), pass + 1),
                );
                // The row's reference, without a broker (see `sink::sink_reference`); its CPU is all
                // the load generator's (the sink's readers run in this process).
                let own_before = cpu_seconds("self");
                let began = Instant::now();
                match runtime.block_on(sink::sink_reference(clients, messages, payload)) {
                    Ok(measured) => {
                        let elapsed = began.elapsed().as_secs_f64().max(1e-9);
                        let own = (cpu_seconds("self") - own_before) / elapsed * 100.0;
                        reference.push((measured, 0.0, own));
                    }
                    Err(error) => println!("\n{} on the sink: failed: {error:#}", scenario.name()),
                }
                done += 1;
            }
            for (&kind, results) in brokers.iter().zip(passes.iter_mut()) {
                progress(
                    done,
                    total,
                    &format!("{} on {} (pass {})", scenario.name(), kind.name(), pass + 1),
                );
                let broker = Broker::start(kind, root)?;
                let pid = broker.pid().to_string();
                let (broker_before, own_before) = (cpu_seconds(&pid), cpu_seconds("self"));
                let began = Instant::now();
                let rss = || broker.rss_kib();
                let measured = runtime.block_on(scenarios::run(scenario, broker.port, &rss));
                let elapsed = began.elapsed().as_secs_f64().max(1e-9);
                let broker_cpu = (cpu_seconds(&pid) - broker_before) / elapsed * 100.0;
                let generator_cpu = (cpu_seconds("self") - own_before) / elapsed * 100.0;
                drop(broker);
                done += 1;
                match measured {
                    Ok(measured) => results.push((measured, broker_cpu, generator_cpu)),
                    Err(error) => println!(
                        "\n{} on {}: failed: {error:#}",
                        scenario.name(),
                        kind.name()
                    ),
                }
            }
        }
        let named = brokers.iter().map(|kind| kind.name()).zip(passes);
        for (broker, results) in named.chain(std::iter::once((SINK, reference))) {
            if let Some((measured, broker_cpu, generator_cpu)) = report::median_pass(results) {
                rows.push(Row {
                    scenario: scenario.name(),
                    broker,
                    measured,
                    broker_cpu,
                    generator_cpu,
                });
            }
        }
    }
    progress(
        total,
        total,
        &format!("done in {:.0} s", started.elapsed().as_secs_f64()),
    );
    eprintln!();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    report::table(&rows, settings.passes);
    report::csv(&rows, &dir.join("results.csv"))?;
    report::svg(&rows, &dir.join("results.svg"))?;
    println!("\nwritten: target/bench/results.csv, target/bench/results.svg");
    Ok(())
}

/// A progress bar on standard error.
fn progress(done: usize, total: usize, what: &str) {
    let width = 30;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
    let mut err = std::io::stderr();
    let _ = write!(err, "\r[{bar}] {done}/{total} {what:<70}");
    let _ = err.flush();
}
