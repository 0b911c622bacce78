//! The load scenarios. Each returns what it measured; loss is counted, never hidden.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mqtt_packets::QoS;

use super::client::{self, Client};

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
            Self::Latency { rate, .. } => format!("latency {rate} msg/s QoS 0"),
            Self::Connections { count } => format!("{count} idle connections"),
        }
    }
}

impl Scenario {
    /// The shape of a one-at-a-time stresser row (clients, messages, payload), which also has
    /// a [`sink_reference`].
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
}

impl Measured {
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
fn spread(rates: &mut [f64]) -> (f64, f64, f64) {
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
            let receiving = tokio::spawn(client::receive(subscriber, messages, |_| {}));
            let began = Instant::now();
            client::publish(publisher, &topic, qos, messages, window, payload, None).await?;
            let published = began.elapsed();
            let received = receiving.await??;
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

/// The reference for a one-at-a-time stresser row: its publishers, writing the same messages one
/// per write as in the row, to a sink with no broker and no subscribers. The sink answers
/// CONNACK, then one thread reads every connection in bulk once a millisecond and discards what
/// it reads. It shows how much of the row is the cost of the publishers' own system calls. It is
/// a reference, not a bound: in runs on 2026-11-27 a peer broker that left the messages in the
/// socket buffers longer let its publishers go up to about 20 % faster than this.
pub(crate) async fn sink_reference(
    clients: usize,
    messages: usize,
    payload: usize,
) -> Result<Measured> {
    /// Tells the sink to stop when the run ends, also on an early error.
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let stop = Stop(std::sync::Arc::default());
    let stopped = stop.0.clone();
    let sink = std::thread::spawn(move || sink(&listener, clients, &stopped));
    let run = format!("{:x}", rand_id());
    let mut publishers = Vec::new();
    for i in 0..clients {
        publishers.push(Client::connect(port, &format!("p-{run}-{i}")).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, publisher)| {
            let topic = format!("bench/{run}/stress/{i}");
            tokio::spawn(async move {
                let began = Instant::now();
                client::publish(
                    publisher,
                    &topic,
                    QoS::AtMostOnce,
                    messages,
                    1,
                    payload,
                    None,
                )
                .await?;
                anyhow::Ok(began.elapsed())
            })
        })
        .collect();
    let mut rates = Vec::new();
    for task in tasks {
        let published = task.await??;
        rates.push(messages as f64 / published.as_secs_f64().max(1e-9));
    }
    // The publishers' connections are closed: the sink's readers end, with what they read.
    let packets = tokio::task::spawn_blocking(move || sink.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the sink panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Measured {
        sent: clients * messages,
        expected: clients * messages,
        received: packets,
        rate: packets as f64 / seconds,
        per_client: Some(spread(&mut rates)),
        per_client_headline: true,
        seconds,
        ..Measured::default()
    })
}

/// The sink of [`sink_reference`]: accepts `clients` connections and answers each CONNECT with
/// CONNACK; then one thread reads every connection until it would block, sleeps a millisecond,
/// and goes round again until every client has closed. Reading in bulk takes little CPU from the
/// publishers (a reader woken by every write takes the most). Returns the PUBLISH packets read
/// in all; an error if the wait ran out before every client closed.
fn sink(
    listener: &std::net::TcpListener,
    clients: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<usize> {
    use std::io::{ErrorKind, Read as _, Write as _};
    struct Reader {
        stream: std::net::TcpStream,
        held: Vec<u8>,
    }
    // Counts the whole packets in `held` and drops them; true if one was not a PUBLISH.
    let count = |held: &mut Vec<u8>, publishes: &mut usize| -> Result<bool> {
        let mut other = false;
        let mut at = 0;
        while let Some((frame, len)) = client::frame(held.get(at..).unwrap_or_default())? {
            if matches!(frame, client::Frame::Publish { .. }) {
                *publishes += 1;
            } else {
                other = true;
            }
            at += len;
        }
        held.drain(..at);
        Ok(other)
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut publishes = 0;
    let mut readers = Vec::new();
    let deadline = Instant::now() + client::WAIT;
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline;
    listener.set_nonblocking(true)?;
    for _ in 0..clients {
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if stopped() {
                        bail!("the sink stopped before every publisher connected");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => return Err(error.into()),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(client::WAIT))?;
        let mut held = Vec::new();
        // Up to the CONNECT, then CONNACK.
        loop {
            let read = stream.read(&mut buf)?;
            if read == 0 {
                bail!("a publisher closed before CONNACK");
            }
            held.extend_from_slice(buf.get(..read).unwrap_or_default());
            if count(&mut held, &mut publishes)? {
                break;
            }
        }
        stream.write_all(&[0x20, 2, 0, 0])?;
        stream.set_nonblocking(true)?;
        readers.push(Reader { stream, held });
    }
    while !readers.is_empty() && !stopped() {
        let mut index = 0;
        while let Some(reader) = readers.get_mut(index) {
            let closed = loop {
                match reader.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(read) => {
                        reader
                            .held
                            .extend_from_slice(buf.get(..read).unwrap_or_default());
                        count(&mut reader.held, &mut publishes)?;
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
                    Err(error) => return Err(error.into()),
                }
            };
            if closed {
                readers.swap_remove(index);
            } else {
                index += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !readers.is_empty() {
        bail!(
            "the sink stopped with {} publishers still connected",
            readers.len()
        );
    }
    Ok(publishes)
}

/// `publishers` publishers (each `messages`, pipelined) to `subscribers` subscribers of one
/// filter matching every publisher's topic; every subscriber expects every message.
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
        .map(|subscriber| tokio::spawn(client::receive(subscriber, expected, |_| {})))
        .collect();
    let publishing: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, publisher)| {
            let topic = format!("bench/{run}/fan/{p}");
            tokio::spawn(async move {
                client::publish(publisher, &topic, qos, messages, WINDOW, payload, None).await
            })
        })
        .collect();
    for task in publishing {
        task.await??;
    }
    let mut received = 0;
    for task in receiving {
        received += task.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Measured {
        sent: expected,
        expected: expected * subscribers,
        received,
        rate: received as f64 / seconds,
        seconds,
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
    let received = receiving.await??;
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
fn rand_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
