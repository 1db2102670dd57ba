//! Helpers the benchmarks share: the closed-loop load run ([`measure`]), the
//! `redis-benchmark` reference run, resident memory and CPU time of processes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// Latency and throughput of one measured load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Completed requests per second.
    pub per_second: f64,
}

/// Runs `redis-benchmark -h 127.0.0.1 -p <port> -n <requests> -c <clients> --csv <command...>`
/// against a private server; `Err` says why there is no figure (e.g. the tool is missing:
/// Debian package redis-tools).
pub async fn redis_benchmark(port: u16, requests: usize, clients: usize, command: &[&str]) -> Result<Figures, String> {
    let (port, requests, clients) = (port.to_string(), requests.to_string(), clients.to_string());
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-n", &requests, "-c", &clients, "--csv"];
    args.extend_from_slice(command);
    let output = match tokio::process::Command::new("redis-benchmark").args(&args).output().await {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err("redis-benchmark is not installed (Debian package redis-tools); reference skipped".to_owned());
        }
        Err(error) => return Err(format!("cannot run redis-benchmark: {error}")),
    };
    if !output.status.success() {
        return Err(format!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse_redis_benchmark_csv(&String::from_utf8_lossy(&output.stdout))
}

/// Reads the header line (`"test","rps","avg_latency_ms",...,"p50_latency_ms",...`) and the
/// data line after it. The test name holds the command, which has no comma or quote.
pub fn parse_redis_benchmark_csv(csv: &str) -> Result<Figures, String> {
    let split = |line: &str| line.split(',').map(|cell| cell.trim().trim_matches('"').to_owned()).collect::<Vec<_>>();
    let mut lines = csv.lines().filter(|line| !line.trim().is_empty());
    let header = lines
        .by_ref()
        .map(split)
        .find(|cells| cells.iter().any(|cell| cell == "p50_latency_ms"))
        .ok_or_else(|| format!("no CSV header in redis-benchmark output: {csv:?}"))?;
    let row = lines.next().map(split).ok_or_else(|| format!("no CSV row in redis-benchmark output: {csv:?}"))?;
    let column = |name: &str| -> Result<f64, String> {
        let index = header.iter().position(|cell| cell == name).ok_or_else(|| format!("no column {name}"))?;
        row.get(index)
            .and_then(|cell| cell.parse::<f64>().ok())
            .ok_or_else(|| format!("column {name} is not a number in {row:?}"))
    };
    Ok(Figures {
        p50_us: column("p50_latency_ms")? * 1e3,
        p99_us: column("p99_latency_ms")? * 1e3,
        mean_us: column("avg_latency_ms")? * 1e3,
        per_second: column("rps")?,
    })
}

/// This process's resident set size in bytes (`/proc/self/statm`, pages of 4 KiB).
pub fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("cannot read /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| anyhow!("unexpected /proc/self/statm: {statm:?}"))?;
    Ok(pages * 4096)
}

/// CPU time (user + system) process `pid` (this process if `None`) has used so far, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms: measure runs of seconds, not single calls).
pub fn cpu_time(pid: Option<u32>) -> anyhow::Result<std::time::Duration> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| std::time::Duration::from_millis(ticks * 10))
        .ok_or_else(|| anyhow!("unexpected {path}: {stat:?}"))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line; the command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted after its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_benchmark_csv_is_read_by_column_name() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"GET\",\"50000.00\",\"0.020\",\"0.008\",\"0.015\",\"0.031\",\"0.047\",\"0.503\"\n";
        let figures = parse_redis_benchmark_csv(csv).unwrap();
        assert_eq!(figures.per_second, 50_000.0);
        assert!((figures.p50_us - 15.0).abs() < 1e-9 && (figures.p99_us - 47.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_even_with_spaces_in_the_name() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}

/// One load generator's connection and state: it makes one call of kind `C` at a time.
pub trait LoadWorker<C>: Send + 'static {
    /// Makes one call and waits for its answer.
    fn call(&mut self, call: C) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// One call's figures and the CPU it cost per call: this process (server and load generator
/// together) and the Redis server, when its pid is known.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Latency and throughput.
    pub figures: Figures,
    /// CPU of this process per call, µs.
    pub cpu_us: f64,
    /// CPU of redis-server per call, µs.
    pub redis_cpu_us: Option<f64>,
}

/// A histogram of nanoseconds up to a minute, 3 significant digits.
fn nanos_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Every worker makes `call` back to back, each in its own task: `warmup`, then the measured
/// `run`. Latency over all workers; calls/s summed over them; CPU per call over both phases.
pub async fn measure<C, W>(
    workers: &[Arc<Mutex<W>>],
    call: C,
    warmup: Duration,
    run: Duration,
    redis_pid: Option<u32>,
) -> anyhow::Result<Measured>
where
    C: Copy + Send + 'static,
    W: LoadWorker<C>,
{
    let cpu_before = (cpu_time(None)?, redis_pid.map(|pid| cpu_time(Some(pid))).transpose()?);
    let mut tasks = Vec::new();
    for worker in workers {
        let worker = worker.clone();
        tasks.push(tokio::spawn(async move {
            let mut worker = worker.lock().await;
            let mut histogram = nanos_histogram()?;
            let warm_until = Instant::now() + warmup;
            let mut warmup_calls = 0u64;
            while Instant::now() < warm_until {
                worker.call(call).await?;
                warmup_calls += 1;
            }
            let started = Instant::now();
            let until = started + run;
            let mut calls = 0u64;
            while Instant::now() < until {
                let sent = Instant::now();
                worker.call(call).await?;
                histogram.record(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1))?;
                calls += 1;
            }
            anyhow::Ok((histogram, calls, started.elapsed(), warmup_calls + calls))
        }));
    }
    let mut all = nanos_histogram()?;
    let mut per_second = 0.0;
    let mut total_calls = 0;
    for task in tasks {
        let (histogram, calls, elapsed, all_calls) = task.await??;
        all.add(&histogram)?;
        per_second += calls as f64 / elapsed.as_secs_f64();
        total_calls += all_calls;
    }
    let per_call = |before: Duration, after: Duration| (after - before).as_secs_f64() * 1e6 / total_calls.max(1) as f64;
    let cpu_us = per_call(cpu_before.0, cpu_time(None)?);
    let redis_cpu_us = match (cpu_before.1, redis_pid) {
        (Some(before), Some(pid)) => Some(per_call(before, cpu_time(Some(pid))?)),
        _ => None,
    };
    let figures = Figures {
        p50_us: all.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: all.value_at_quantile(0.99) as f64 / 1e3,
        mean_us: all.mean() / 1e3,
        per_second,
    };
    Ok(Measured { figures, cpu_us, redis_cpu_us })
}
