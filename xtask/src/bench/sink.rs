//! The reference of the one-at-a-time stresser rows: the same publishers writing to a sink that
//! only reads, with no broker and no subscribers.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mqtt_packets::QoS;

use super::client::{self, Client, Mark};
use super::scenarios::{Measured, rand_id, spread};

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
                    Mark::None,
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
