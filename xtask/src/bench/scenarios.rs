//! The load scenarios. Each returns what it measured; loss is counted, never hidden.

use std::time::{Duration, Instant};

use anyhow::Result;
use mqtt_packets::QoS;

use super::client::{self, Client, Mark};
use super::rumqttc_client;
use super::tally::Tally;

/// Messages each publisher keeps unacknowledged in the pipelined modes.
pub(crate) const WINDOW: usize = 100;

/// One scenario's shape.
#[derive(Debug, Clone)]
pub(crate) enum Scenario {
    /// `clients` clients, each subscribed to its own topic and publishing `messages` to it.
    Stresser {
        clients: usize,
        messages: usize,
        qos: QoS,
        payload: usize,
        window: usize,
    },
    /// `publishers` → 1 subscriber.
    FanIn {
        publishers: usize,
        messages: usize,
        qos: QoS,
        payload: usize,
    },
    /// 1 publisher → `subscribers`.
    FanOut {
        subscribers: usize,
        messages: usize,
        qos: QoS,
        payload: usize,
    },
    /// A fan row (`publishers` → `subscribers`) with `rumqttc` clients instead of our own: what
    /// users' clients see (see `rumqttc_client`).
    Rumqttc {
        publishers: usize,
        subscribers: usize,
        messages: usize,
        qos: QoS,
        payload: usize,
    },
    /// One publisher at `rate` msg/s for `seconds`, QoS 0: end-to-end latency.
    Latency { rate: u32, seconds: u64 },
    /// `count` idle connections: connect rate and broker memory per connection.
    Connections { count: usize },
}

fn qos_name(qos: QoS) -> u8 {
    qos.as_u8()
}

impl Scenario {
    /// A short name for tables and the CSV.
    pub(crate) fn name(&self) -> String {
        let size = |payload: usize| {
            if payload >= 1024 {
                format!("{} KiB", payload / 1024)
            } else {
                format!("{payload} B")
            }
        };
        match self {
            Self::Stresser {
                clients,
                messages,
                qos,
                payload,
                window,
            } => format!(
                "stresser {clients}x{messages} QoS {} {}{}",
                qos_name(*qos),
                size(*payload),
                if *window == 1 { " one-at-a-time" } else { "" }
            ),
            Self::FanIn {
                publishers,
                qos,
                payload,
                ..
            } => format!(
                "fan-in {publishers}->1 QoS {} {}",
                qos_name(*qos),
                size(*payload)
            ),
            Self::FanOut {
                subscribers,
                qos,
                payload,
                ..
            } => format!(
                "fan-out 1->{subscribers} QoS {} {}",
                qos_name(*qos),
                size(*payload)
            ),
            Self::Rumqttc {
                publishers,
                subscribers,
                qos,
                payload,
                ..
            } => format!(
                "{} {publishers}->{subscribers} QoS {} {} (rumqttc)",
                if *subscribers == 1 {
                    "fan-in"
                } else {
                    "fan-out"
                },
                qos_name(*qos),
                size(*payload)
            ),
            Self::Latency { rate, .. } => format!("latency {rate} msg/s QoS 0"),
            Self::Connections { count } => format!("{count} idle connections"),
        }
    }
}

impl Scenario {
    /// The shape of a one-at-a-time stresser row (clients, messages, payload), which also has
    /// a [`sink_reference`](super::sink::sink_reference).
    pub(crate) fn one_at_a_time(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Self::Stresser {
                clients,
                messages,
                qos: QoS::AtMostOnce,
                payload,
                window: 1,
            } => Some((clients, messages, payload)),
            _ => None,
        }
    }
}

/// What a scenario measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    /// Messages sent and received (for throughput scenarios).
    pub(crate) sent: usize,
    pub(crate) expected: usize,
    pub(crate) received: usize,
    /// Received messages per second.
    pub(crate) rate: f64,
    /// Per-client publish rates (stresser): min, median, max.
    pub(crate) per_client: Option<(f64, f64, f64)>,
    /// Whether the compared figure is the per-client median publish rate (the one-at-a-time
    /// stresser rows: mqtt-stresser's "median publish rate") rather than the received rate.
    pub(crate) per_client_headline: bool,
    /// Latency percentiles in microseconds: p50, p99, p99.9.
    pub(crate) latency_us: Option<(f64, f64, f64)>,
    /// Connections: connects per second and KiB of broker memory per connection.
    pub(crate) connections: Option<(f64, f64)>,
    pub(crate) seconds: f64,
    /// Messages received more than once (fan rows; not counted in `received`).
    pub(crate) duplicates: usize,
    /// Connection errors that ended a client's part of the row (rumqttc rows).
    pub(crate) errors: Vec<String>,
    /// The most messages lost in any pass of the row (set with the median pass), so that a
    /// loss in a pass other than the median one is reported too.
    pub(crate) worst_lost: usize,
}

impl Measured {
    /// The expected messages that did not arrive.
    pub(crate) fn lost(&self) -> usize {
        self.expected.saturating_sub(self.received)
    }

    /// The share of expected messages that did not arrive.
    pub(crate) fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        1.0 - self.received as f64 / self.expected as f64
    }
}

/// Runs one scenario against the broker on `port`; `rss` reads the broker's memory in KiB.
pub(crate) async fn run(
    scenario: &Scenario,
    port: u16,
    rss: &(dyn Fn() -> Option<u64> + Sync),
) -> Result<Measured> {
    match scenario {
        Scenario::Stresser {
            clients,
            messages,
            qos,
            payload,
            window,
        } => stresser(port, *clients, *messages, *qos, *payload, *window).await,
        Scenario::FanIn {
            publishers,
            messages,
            qos,
            payload,
        } => fan(port, *publishers, 1, *messages, *qos, *payload).await,
        Scenario::FanOut {
            subscribers,
            messages,
            qos,
            payload,
        } => fan(port, 1, *subscribers, *messages, *qos, *payload).await,
        Scenario::Rumqttc {
            publishers,
            subscribers,
            messages,
            qos,
            payload,
        } => rumqttc_client::fan(port, *publishers, *subscribers, *messages, *qos, *payload).await,
        Scenario::Latency { rate, seconds } => latency(port, *rate, *seconds).await,
        Scenario::Connections { count } => connections(port, *count, rss).await,
    }
}

/// The median, as mqtt-stresser computes it: the mean of the two middle values when the count
/// is even (with 2 clients, the mean of both rather than the faster one).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let Some(&upper) = values.get(values.len() / 2) else {
        return 0.0;
    };
    let lower = values.get((values.len() - 1) / 2).copied().unwrap_or(upper);
    (lower + upper) / 2.0
}

/// The per-client rates' minimum, median and maximum.
pub(crate) fn spread(rates: &mut [f64]) -> (f64, f64, f64) {
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    (min, median(rates), max)
}

/// `clients` pairs (a subscriber and a publisher on its topic), each publishing `messages` with
/// `window` unacknowledged at most (1: one at a time, as mqtt-stresser does). Measures the
/// received rate in all and each publisher's publish rate (its messages over the time from its
/// first write to its last write, or to its last acknowledgement at QoS 1/2).
async fn stresser(
    port: u16,
    clients: usize,
    messages: usize,
    qos: QoS,
    payload: usize,
    window: usize,
) -> Result<Measured> {
    let run = format!("{:x}", rand_id());
    let mut tasks = Vec::new();
    // Each client: one connection receiving its own topic, one publishing to it.
    let mut pairs = Vec::new();
    for i in 0..clients {
        let topic = format!("bench/{run}/stress/{i}");
        let mut subscriber = Client::connect(port, &format!("s-{run}-{i}")).await?;
        subscriber.subscribe(&topic, qos).await?;
        let publisher = Client::connect(port, &format!("p-{run}-{i}")).await?;
        pairs.push((topic, subscriber, publisher));
    }
    let start = Instant::now();
    for (topic, subscriber, publisher) in pairs {
        tasks.push(tokio::spawn(async move {
            let receiving = tokio::spawn(client::receive(subscriber, messages, |_| true));
            let began = Instant::now();
            client::publish(
                publisher,
                &topic,
                qos,
                messages,
                window,
                payload,
                Mark::None,
            )
            .await?;
            let published = began.elapsed();
            let received = receiving.await??.counted;
            anyhow::Ok((received, published))
        }));
    }
    let mut received = 0;
    let mut rates = Vec::new();
    for task in tasks {
        let (count, published) = task.await??;
        received += count;
        rates.push(messages as f64 / published.as_secs_f64().max(1e-9));
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Measured {
        sent: clients * messages,
        expected: clients * messages,
        received,
        rate: received as f64 / seconds,
        per_client: Some(spread(&mut rates)),
        per_client_headline: window == 1,
        seconds,
        ..Measured::default()
    })
}

/// `publishers` publishers (each `messages`, pipelined) to `subscribers` subscribers of one
/// filter matching every publisher's topic; every subscriber expects every message. Messages
/// carry their publisher and sequence number, so a duplicate never makes up for a loss.
async fn fan(
    port: u16,
    publishers: usize,
    subscribers: usize,
    messages: usize,
    qos: QoS,
    payload: usize,
) -> Result<Measured> {
    let run = format!("{:x}", rand_id());
    let filter = format!("bench/{run}/fan/+");
    let expected = publishers * messages;
    let mut receivers = Vec::new();
    for s in 0..subscribers {
        let mut subscriber = Client::connect(port, &format!("s-{run}-{s}")).await?;
        subscriber.subscribe(&filter, qos).await?;
        receivers.push(subscriber);
    }
    let mut senders = Vec::new();
    for p in 0..publishers {
        senders.push(Client::connect(port, &format!("p-{run}-{p}")).await?);
    }
    let start = Instant::now();
    let receiving: Vec<_> = receivers
        .into_iter()
        .map(|subscriber| {
            let mut tally = Tally::new(publishers, messages);
            tokio::spawn(client::receive(subscriber, expected, move |payload| {
                tally.record(payload)
            }))
        })
        .collect();
    let publishing: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, publisher)| {
            let topic = format!("bench/{run}/fan/{p}");
            tokio::spawn(async move {
                let mark = Mark::Sequence(p);
                client::publish(publisher, &topic, qos, messages, WINDOW, payload, mark).await
            })
        })
        .collect();
    for task in publishing {
        task.await??;
    }
    // Up to the last delivery, or the publishers' end if later: a subscriber that stopped short
    // of its count (loss) waited a quiet period that is not part of the rate.
    let mut end = Instant::now();
    let (mut received, mut duplicates) = (0, 0);
    for task in receiving {
        let got = task.await??;
        received += got.counted;
        duplicates += got.duplicates;
        end = end.max(got.last.unwrap_or(start));
    }
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    Ok(Measured {
        sent: expected,
        expected: expected * subscribers,
        received,
        rate: received as f64 / seconds,
        seconds,
        duplicates,
        ..Measured::default()
    })
}

/// One publisher at `rate` msg/s for `seconds`, each message stamped: end-to-end latency.
async fn latency(port: u16, rate: u32, seconds: u64) -> Result<Measured> {
    let run = format!("{:x}", rand_id());
    let topic = format!("bench/{run}/latency");
    let mut subscriber = Client::connect(port, &format!("s-{run}")).await?;
    subscriber.subscribe(&topic, QoS::AtMostOnce).await?;
    let publisher = Client::connect(port, &format!("p-{run}")).await?;
    let count = usize::try_from(u64::from(rate) * seconds).unwrap_or(usize::MAX);
    let origin = Instant::now();
    let samples = std::sync::Arc::new(parking_lot::Mutex::new(Vec::with_capacity(count)));
    let receiving = tokio::spawn({
        let samples = samples.clone();
        client::receive(subscriber, count, move |payload| {
            if let Some(sent) = client::stamp_of(payload) {
                let now = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                samples.lock().push(now.saturating_sub(sent));
            }
            true
        })
    });
    // Paced: one message per tick.
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut publisher = publisher;
    for _ in 0..count {
        ticks.tick().await;
        publish_one(&mut publisher, &topic, origin).await?;
    }
    let received = receiving.await??.counted;
    let mut values: Vec<f64> = samples
        .lock()
        .iter()
        .map(|&ns| ns as f64 / 1000.0)
        .collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((values.len() as f64 - 1.0) * q).round() as usize;
        values.get(index).copied().unwrap_or_default()
    };
    Ok(Measured {
        sent: count,
        expected: count,
        received,
        rate: f64::from(rate),
        latency_us: Some((at(0.5), at(0.99), at(0.999))),
        seconds: seconds as f64,
        ..Measured::default()
    })
}

/// Publishes one stamped QoS 0 message (no acknowledgement to wait for).
async fn publish_one(client: &mut Client, topic: &str, origin: Instant) -> Result<()> {
    use bytes::BytesMut;
    use mqtt_packets::{MqttString, Publish};
    use tokio::io::AsyncWriteExt;
    let nanos = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut payload = vec![0x5A_u8; 64];
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&nanos.to_be_bytes());
    }
    let publish = Publish::new(MqttString::new(topic)?, payload);
    let mut out = BytesMut::new();
    publish.encode(client::PROTOCOL, &mut out)?;
    client.write.write_all(&out).await?;
    Ok(())
}

/// Opens `count` idle connections: the connect rate and the broker's memory per connection.
async fn connections(
    port: u16,
    count: usize,
    rss: &(dyn Fn() -> Option<u64> + Sync),
) -> Result<Measured> {
    let run = format!("{:x}", rand_id());
    // Settle, then measure the broker's memory before and after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss().unwrap_or_default();
    let start = Instant::now();
    // Connects from CONCURRENT tasks at once, so the generator's round trips do not set the
    // rate; several 127.x source addresses, so one address's ephemeral ports are not the limit.
    const CONCURRENT: usize = 64;
    let mut workers = Vec::new();
    for worker in 0..CONCURRENT {
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            let mut open = Vec::new();
            let mut i = worker;
            while i < count {
                let source =
                    std::net::IpAddr::from([127, 0, 1, u8::try_from(i % 200 + 1).unwrap_or(1)]);
                open.push(Client::connect_from(Some(source), port, &format!("c-{run}-{i}")).await?);
                i += CONCURRENT;
            }
            anyhow::Ok(open)
        }));
    }
    let mut open = Vec::with_capacity(count);
    for worker in workers {
        open.extend(worker.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss().unwrap_or_default();
    let per_connection = after.saturating_sub(before) as f64 / count as f64;
    drop(open);
    Ok(Measured {
        connections: Some((count as f64 / seconds, per_connection)),
        seconds,
        ..Measured::default()
    })
}

/// A run id, so that topics and client ids of passes never meet.
pub(crate) fn rand_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
