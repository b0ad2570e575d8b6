//! A real Redis Cluster for tests: `redis-server --cluster-enabled yes` processes (masters,
//! optionally with replicas) on free 127.0.0.1 ports in a temp dir, joined with
//! `redis-cli --cluster create … --cluster-replicas N`, ready once every node reports
//! `cluster_state:ok`. Killed (by their own PIDs only) when the guard drops.
//!
//! Nodes keep serving their own slots while another node is down
//! (`cluster-require-full-coverage no`), so a test can kill one and check that what lives
//! elsewhere keeps working.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port, kill, require, wait_port};

struct Node {
    port: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    // Dropped after the nodes (fields drop in order), so no server outlives its files.
    _dir: TempDir,
}

impl RedisCluster {
    /// Start `masters` (at least 3, as `redis-cli --cluster create` demands) master
    /// nodes sharing the 16384 slots evenly.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with_replicas(masters, 0)
    }

    /// Start `masters` masters and `replicas` replicas of each (nodes `masters..` are
    /// the replicas), so a killed master fails over.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let dir = TempDir::new("redis-cluster");
        let server = require("redis-server");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            let data = dir.path().join(port.to_string());
            std::fs::create_dir_all(&data).expect("create a node's dir");
            let mut child = Command::new(&server)
                .arg("--port")
                .arg(port.to_string())
                // The bus port would default to port + 10000, which may be taken or > 65535.
                .arg("--cluster-port")
                .arg(free_port().to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                // With replicas, short enough for a failover within seconds; without,
                // Redis's own default (15 s), so a node starved of CPU on a loaded test
                // machine is never taken for dead: a bus link reset drops the pub/sub
                // messages in flight on it.
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
                .arg(if replicas > 0 { "4000" } else { "15000" })
                .args(["--cluster-require-full-coverage", "no"])
                .arg("--cluster-config-file")
                .arg(data.join("nodes.conf"))
                .arg("--dir")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
            wait_port(port, &mut child, "redis-server", Duration::from_secs(10));
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        let out = Command::new(require("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        // A replica that has not finished its first sync refuses to take over (its data
        // is too old), so a test killing a master right away would see no failover.
        for node in masters..cluster.nodes.len() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !cluster
                .cli(node, &["INFO", "replication"])
                .contains("master_link_status:up")
            {
                assert!(
                    Instant::now() < deadline,
                    "replica {node} never synced with its master"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Wait until every live node sees the whole cluster healthy (after a failover too):
    /// `cluster_state:ok`, every slot served, and no slot left to a node this guard killed.
    /// The last because a node that has not yet heard of a failover still reports its
    /// slots ok, with the dead master as their owner.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_none())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        for node in 0..self.nodes.len() {
            if self.nodes[node].child.is_none() {
                continue;
            }
            loop {
                let info = self.cli(node, &["CLUSTER", "INFO"]);
                let table = self.cli(node, &["--raw", "CLUSTER", "NODES"]);
                let dead_own_slots =
                    table
                        .lines()
                        .filter_map(node_entry)
                        .any(|(addr, mut slots)| {
                            slots.next().is_some() && dead.iter().any(|d| d == addr)
                        });
                if info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && !dead_own_slots
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster did not become healthy: {info}\n{table}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis://127.0.0.1:<port>/` of every node, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// Every node's URL, comma-separated: the seed list `--redis-url` takes.
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Run `redis-cli` against node `node` and return its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let out = Command::new(require("redis-cli"))
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.nodes[node].port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The keys node `node` holds itself (`KEYS *` never redirects).
    pub fn keys(&self, node: usize) -> Vec<String> {
        self.cli(node, &["--raw", "KEYS", "*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Which node serves `key`'s slot, as a live node's `CLUSTER NODES` tells.
    pub fn node_of(&self, key: &str) -> usize {
        let live = (0..self.nodes.len())
            .find(|&n| self.nodes[n].child.is_some())
            .expect("a live node");
        let slot: u16 = self
            .cli(live, &["--raw", "CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let table = self.cli(live, &["--raw", "CLUSTER", "NODES"]);
        let owner = table
            .lines()
            .filter_map(node_entry)
            .find_map(|(addr, mut slots)| {
                slots
                    .any(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        match (a.parse::<u16>(), b.parse::<u16>()) {
                            (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                            _ => false,
                        }
                    })
                    .then_some(addr)
            })
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .expect("some node serves every slot");
        self.nodes
            .iter()
            .position(|n| n.port == owner)
            .expect("the owner is one of ours")
    }

    /// SIGKILL node `node`: its slots are unavailable until a replica takes over (never,
    /// without replicas).
    pub fn kill_node(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            kill(&mut child);
        }
    }
}

/// One line of `CLUSTER NODES`: the node's `ip:port` and its slot fields (single slots,
/// ranges, and migration entries).
/// `<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>…`
fn node_entry(line: &str) -> Option<(&str, impl Iterator<Item = &str>)> {
    let mut fields = line.split(' ').filter(|f| !f.is_empty());
    let addr = fields.nth(1)?.split(['@', ',']).next()?;
    Some((addr, fields.skip(6)))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill_node(node);
        }
    }
}
