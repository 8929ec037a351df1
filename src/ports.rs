//! Host port allocation from the configured range. A port is handed out only when no row
//! books it (the `instances.host_port` UNIQUE column is the booking) and a real bind on the
//! host succeeds, because other programs use 8000–9000 too. One lock covers choosing,
//! probing and committing, so concurrent creations never pick the same port; the unique
//! index is the last guard should anything slip past it.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use tokio::sync::Mutex;

use crate::config::PortsConfig;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free host port left in {start}–{end}: {booked} are booked by addond and {busy} are held by other programs; delete or scale down services, or widen ports.range_start/range_end")]
    Exhausted { start: u16, end: u16, booked: usize, busy: usize },
    #[error("preferred host port {0} is booked by another service")]
    PreferredBooked(u16),
    #[error("preferred host port {0} is in use by another program on this host")]
    PreferredBusy(u16),
}

pub struct PortAllocator {
    start: u16,
    end: u16,
    publish: IpAddr,
    /// Held from choosing ports until the caller's booking transaction committed.
    lock: Mutex<u16>,
}

/// True when nothing on the host holds `port`: probes the publish address and the
/// wildcard, since a listener on either would collide with the published port.
pub fn port_is_free(publish: IpAddr, port: u16) -> bool {
    let mut addrs = vec![SocketAddr::new(publish, port)];
    if !publish.is_unspecified() {
        addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    addrs.into_iter().all(|a| TcpListener::bind(a).is_ok())
}

/// Picks `n` ports: the preferred one first (if any), then scanning from `cursor`,
/// skipping booked ports and those `is_free` rejects. Pure, so it is unit-tested.
pub fn choose(
    start: u16,
    end: u16,
    cursor: u16,
    n: usize,
    booked: &HashSet<u16>,
    mut is_free: impl FnMut(u16) -> bool,
) -> Result<Vec<u16>, (usize, usize)> {
    let span = (end - start) as usize + 1;
    let mut out = Vec::with_capacity(n);
    let mut busy = 0;
    for k in 0..span {
        if out.len() == n {
            break;
        }
        let port = start + ((cursor.saturating_sub(start) as usize + k) % span) as u16;
        if booked.contains(&port) {
            continue;
        }
        if is_free(port) {
            out.push(port);
        } else {
            busy += 1;
        }
    }
    if out.len() == n {
        Ok(out)
    } else {
        Err((booked.len(), busy))
    }
}

impl PortAllocator {
    pub fn new(cfg: &PortsConfig) -> Self {
        PortAllocator { start: cfg.range_start, end: cfg.range_end, publish: cfg.publish_address, lock: Mutex::new(cfg.range_start) }
    }

    pub fn range(&self) -> (u16, u16) {
        (self.start, self.end)
    }

    /// Chooses `n` ports and runs `book` with them while holding the allocation lock;
    /// `booked` reads the current bookings (inside the lock, so it is up to date).
    pub async fn allocate<T, E, B, BF, F, FF>(&self, n: usize, preferred: Option<u16>, booked: B, book: F) -> Result<T, E>
    where
        B: FnOnce() -> BF,
        BF: Future<Output = Result<HashSet<u16>, E>>,
        F: FnOnce(Vec<u16>) -> FF,
        FF: Future<Output = Result<T, E>>,
        E: From<PortError>,
    {
        self.allocate_many(&[(n, preferred)], booked, |mut groups| book(groups.pop().unwrap_or_default())).await
    }

    /// [`allocate`](Self::allocate) for several services booked in one transaction (an
    /// addon install): `wants` holds each service's port count and preferred port, and
    /// `book` gets each service's ports in the same order.
    pub async fn allocate_many<T, E, B, BF, F, FF>(&self, wants: &[(usize, Option<u16>)], booked: B, book: F) -> Result<T, E>
    where
        B: FnOnce() -> BF,
        BF: Future<Output = Result<HashSet<u16>, E>>,
        F: FnOnce(Vec<Vec<u16>>) -> FF,
        FF: Future<Output = Result<T, E>>,
        E: From<PortError>,
    {
        let mut cursor = self.lock.lock().await;
        if wants.iter().all(|(n, _)| *n == 0) {
            return book(vec![Vec::new(); wants.len()]).await;
        }
        let mut taken = booked().await?;
        let mut groups = Vec::with_capacity(wants.len());
        let publish = self.publish;
        for &(n, preferred) in wants {
            let mut ports = Vec::with_capacity(n);
            if n == 0 {
                groups.push(ports);
                continue;
            }
            if let Some(p) = preferred {
                if taken.contains(&p) {
                    return Err(PortError::PreferredBooked(p).into());
                }
                if !port_is_free(publish, p) {
                    return Err(PortError::PreferredBusy(p).into());
                }
                ports.push(p);
            }
            taken.extend(ports.iter().copied());
            let more = choose(self.start, self.end, *cursor, n - ports.len(), &taken, |p| port_is_free(publish, p))
                .map_err(|(booked, busy)| PortError::Exhausted { start: self.start, end: self.end, booked, busy })?;
            taken.extend(more.iter().copied());
            ports.extend(more);
            if let Some(last) = ports.last() {
                *cursor = if *last >= self.end { self.start } else { last + 1 };
            }
            groups.push(ports);
        }
        book(groups).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_skips_booked_and_busy_and_wraps() {
        let booked: HashSet<u16> = [8000, 8002].into_iter().collect();
        let got = choose(8000, 8005, 8000, 3, &booked, |p| p != 8003).unwrap();
        assert_eq!(got, vec![8001, 8004, 8005]);
        let got = choose(8000, 8005, 8005, 2, &booked, |_| true).unwrap();
        assert_eq!(got, vec![8005, 8001]);
    }

    #[test]
    fn choose_reports_exhaustion() {
        let booked: HashSet<u16> = [8000].into_iter().collect();
        assert_eq!(choose(8000, 8002, 8000, 3, &booked, |p| p != 8001), Err((1, 1)));
    }

    #[test]
    fn a_held_port_is_not_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_is_free(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        drop(l);
        assert!(port_is_free(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }

    #[tokio::test]
    async fn concurrent_allocations_never_collide() {
        use std::sync::Arc;
        // Below the kernel's ephemeral range (32768–60999 here), where an outgoing
        // connection of any process could hold one of the ports and leave fewer than 100
        // free, and above the integration tests' blocks (20000–30000).
        let cfg = PortsConfig {
            range_start: 31000,
            range_end: 31099,
            publish_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..PortsConfig::default()
        };
        let alloc = Arc::new(PortAllocator::new(&cfg));
        let booked = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (alloc, booked) = (alloc.clone(), booked.clone());
            tasks.push(tokio::spawn(async move {
                let b2 = booked.clone();
                alloc
                    .allocate(
                        2,
                        None,
                        || async move { Ok::<_, PortError>(b2.lock().unwrap().clone()) },
                        |ports| async move {
                            tokio::task::yield_now().await;
                            let mut b = booked.lock().unwrap();
                            for p in &ports {
                                assert!(b.insert(*p), "port {p} handed out twice");
                            }
                            Ok(ports)
                        },
                    )
                    .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 50);
        let third =
            alloc.allocate(1, None, || async { Ok::<_, PortError>(booked.lock().unwrap().clone()) }, |p| async move { Ok(p) }).await;
        assert!(matches!(third, Err(PortError::Exhausted { .. })));
    }
}
