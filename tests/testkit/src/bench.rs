//! Helpers the benchmarks share: the `redis-benchmark` reference run and this process's
//! resident memory.

use anyhow::{Context, anyhow};

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
}
