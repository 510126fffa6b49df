//! Clusters of the test's own: three RabbitMQ nodes joined into one cluster,
//! and a Redis master with a replica watched by three sentinels
//! (docs/operations.md "Running on a cluster"). `deploy/local/ha-cluster.sh`
//! starts the same shapes from a shell for a developer.

use crate::{RabbitNode, RabbitOptions, RedisNode, RedisOptions};
use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// RabbitMQ nodes on free loopback ports sharing one Erlang cookie, joined
/// into one cluster (`stop_app`, `join_cluster`, `start_app` on every node but
/// the first). Each node is a [`RabbitNode`]: kill, restart and drop work per
/// node.
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
}

impl std::fmt::Debug for RabbitCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.nodes).finish()
    }
}

impl RabbitCluster {
    /// Starts `size` nodes (one after the other: three cold boots at once
    /// starve a 2-core machine) and joins them to the first.
    pub async fn start(size: usize) -> anyhow::Result<RabbitCluster> {
        anyhow::ensure!(size >= 1, "a cluster has at least one node");
        let cookie = format!(
            "CTKCLUSTER{}{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        )
        .to_ascii_uppercase();
        let mut nodes = Vec::with_capacity(size);
        for _ in 0..size {
            nodes.push(RabbitNode::start(RabbitOptions::default().cookie(&cookie)).await?);
        }
        let first = nodes[0].node_name().to_owned();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await?;
            node.ctl(&["join_cluster", &first])
                .await
                .with_context(|| format!("joining {} to {first}", node.node_name()))?;
            node.ctl(&["start_app"]).await?;
            node.ctl(&["await_startup", "--timeout", "60"]).await?;
        }
        let cluster = RabbitCluster { nodes };
        let running = cluster.running_nodes().await?;
        if running.len() != size {
            bail!("cluster formed with {running:?}, expected {size} nodes");
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// `127.0.0.1:<port>,…` of every node: the value of `AMQP_ADDRESSES`.
    pub fn addresses(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.amqp_port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first node's URL (credentials and vhost for `AMQP_ADDRESSES`).
    pub fn amqp_url(&self) -> String {
        self.nodes[0].amqp_url()
    }

    /// The node with this Erlang name.
    pub fn node(&self, name: &str) -> Option<&RabbitNode> {
        self.nodes.iter().find(|n| n.node_name() == name)
    }

    /// `rabbitmqctl <args>` on the first node that answers (one may be down).
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = None;
        for node in &self.nodes {
            match node.ctl(args).await {
                Ok(out) => return Ok(out),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no nodes")))
    }

    /// The nodes the cluster reports running.
    pub async fn running_nodes(&self) -> anyhow::Result<Vec<String>> {
        let out = self.ctl(&["eval", "rabbit_nodes:all_running()."]).await?;
        Ok(out
            .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
            .map(|s| s.trim_matches('\''))
            .filter(|s| s.contains('@'))
            .map(str::to_owned)
            .collect())
    }

    /// Queue name → leader node of every quorum queue whose name starts with
    /// `prefix` (`rabbitmqctl list_queues name leader`).
    pub async fn leaders(&self, prefix: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let out = self
            .ctl(&["list_queues", "-q", "--no-table-headers", "name", "leader"])
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                let (name, leader) = (cols.next()?, cols.next()?);
                (name.starts_with(prefix) && leader.contains('@'))
                    .then(|| (name.to_owned(), leader.to_owned()))
            })
            .collect())
    }

    /// The node that leads most of `prefix`'s quorum queues, with its count.
    pub async fn busiest_leader(&self, prefix: &str) -> anyhow::Result<(&RabbitNode, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for leader in self.leaders(prefix).await?.into_values() {
            *counts.entry(leader).or_default() += 1;
        }
        let (name, count) = counts
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .context("no quorum queue leaders found")?;
        let node = self
            .node(&name)
            .with_context(|| format!("leader {name} is not one of ours"))?;
        Ok((node, count))
    }
}

/// A Redis master (append-only file on), one replica and three sentinels
/// watching them under one master name.
pub struct RedisSentinelGroup {
    master_name: String,
    nodes: Vec<RedisNode>,
    sentinels: Vec<RedisNode>,
}

impl std::fmt::Debug for RedisSentinelGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSentinelGroup")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

impl RedisSentinelGroup {
    /// Starts the master, its replica and three sentinels (quorum two), and
    /// returns once the sentinels know the replica.
    pub async fn start(master_name: &str) -> anyhow::Result<RedisSentinelGroup> {
        let master = RedisNode::start(RedisOptions::default().appendonly(true)).await?;
        let replica = RedisNode::start(
            RedisOptions::default()
                .appendonly(true)
                .arg("--replicaof")
                .arg("127.0.0.1")
                .arg(master.port().to_string()),
        )
        .await?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(RedisNode::start_sentinel(master_name, master.port(), 2).await?);
        }
        let group = RedisSentinelGroup {
            master_name: master_name.to_owned(),
            nodes: vec![master, replica],
            sentinels,
        };
        group.await_replicas(1, Duration::from_secs(30)).await?;
        Ok(group)
    }

    /// The master's name for `REDIS_SENTINEL_MASTER`.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// `127.0.0.1:<port>,…` of the sentinels: the value of `REDIS_SENTINELS`.
    pub fn sentinel_addresses(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The two data nodes (master first at start).
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// The port of the node the sentinels name master now.
    pub async fn master_port(&self) -> anyhow::Result<u16> {
        let mut last = None;
        for sentinel in &self.sentinels {
            let asked: anyhow::Result<(String, String)> = async {
                let mut conn = redis::Client::open(sentinel.url())?
                    .get_multiplexed_async_connection()
                    .await?;
                Ok(redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master_name)
                    .query_async(&mut conn)
                    .await?)
            }
            .await;
            match asked {
                Ok((_, port)) => return Ok(port.parse()?),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no sentinels")))
    }

    /// A node by port.
    pub fn node_on(&self, port: u16) -> Option<&RedisNode> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the old master made
    /// its replica. Returns the new master's port once the sentinels name it,
    /// it answers as master, and the old master has caught up as its replica.
    pub async fn failover(&self) -> anyhow::Result<u16> {
        let before = self.master_port().await?;
        let mut conn = redis::Client::open(self.sentinels[0].url())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.master_port().await?;
            if now != before && role(now).await.is_ok_and(|r| r == "master") {
                self.await_replicas(1, Duration::from_secs(30)).await?;
                return Ok(now);
            }
            if Instant::now() > until {
                bail!("no failover from port {before} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the current master has `count` replicas online.
    async fn await_replicas(&self, count: usize, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        loop {
            let port = self.master_port().await?;
            let info: anyhow::Result<String> = async {
                let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
                    .get_multiplexed_async_connection()
                    .await?;
                Ok(redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await?)
            }
            .await;
            let online = info
                .as_deref()
                .map(|i| i.lines().filter(|l| l.contains("state=online")).count())
                .unwrap_or(0);
            if online >= count {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("master on {port} has {online} replicas online, wanted {count}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `ROLE`'s first element of the node on `port`.
async fn role(port: u16) -> anyhow::Result<String> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await?;
    let reply: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await?;
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Ok(s.clone()),
            other => bail!("unexpected ROLE reply {other:?}"),
        },
        other => bail!("unexpected ROLE reply {other:?}"),
    }
}
