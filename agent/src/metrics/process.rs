//! The `process_*` metrics every Prometheus client library exports, from `/proc/self`:
//! CPU seconds, resident and virtual memory, open and maximum descriptors, start time. Read
//! at each scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process metrics, registered without the `gapless_` prefix.
pub struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    cpu_seen: std::sync::Mutex<f64>,
}

impl ProcessMetrics {
    /// Registers them in `registry` (at its root: `process_cpu_seconds_total`, …).
    pub fn register(registry: &mut Registry) -> Self {
        let m = ProcessMetrics {
            cpu_seconds: Counter::default(),
            resident_memory: Gauge::default(),
            virtual_memory: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
            cpu_seen: std::sync::Mutex::new(0.0),
        };
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident_memory.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            m.virtual_memory.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            m.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            m.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            m.start_time.clone(),
        );
        m
    }

    /// Reads `/proc/self` now. What cannot be read keeps its last value.
    pub fn observe(&self) {
        let ticks = 100.0; // USER_HZ: 100 on every Linux the agent runs on.
        let page = 4096i64;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may contain spaces: it ends at the last ')'.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                // rest[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
                if let (Some(u), Some(s)) = (num(11), num(12)) {
                    let cpu = (u + s) / ticks;
                    if let Ok(mut seen) = self.cpu_seen.lock() {
                        if cpu > *seen {
                            self.cpu_seconds.inc_by(cpu - *seen);
                            *seen = cpu;
                        }
                    }
                }
                if let Some(v) = num(20) {
                    self.virtual_memory.set(v as i64);
                }
                if let Some(r) = num(21) {
                    self.resident_memory.set(r as i64 * page);
                }
                if let (Some(start), Some(boot)) = (num(19), boot_time()) {
                    self.start_time.set(boot + start / ticks);
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
            })
        {
            self.max_fds.set(max);
        }
    }
}

/// Boot time in seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_metrics_read_this_process() {
        let mut registry = Registry::default();
        let m = ProcessMetrics::register(&mut registry);
        m.observe();
        assert!(m.resident_memory.get() > 1 << 20);
        assert!(m.open_fds.get() >= 3);
        assert!(m.max_fds.get() >= m.open_fds.get());
        assert!(m.start_time.get() > 1.7e9);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        assert!(out.contains("process_cpu_seconds_total"), "{out}");
    }
}
