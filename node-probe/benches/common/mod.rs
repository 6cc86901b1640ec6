//! Shared by the benches: the median of a few rounds and a line naming the
//! machine, so a pasted table says where its figures come from.
#![allow(dead_code)]

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none. A shared VM has outliers both ways: the
/// median ignores them where a mean would not.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// "2 CPUs (model), kernel 6.18.44": what the figures were measured on.
pub fn machine() -> String {
    // From /proc/cpuinfo, not the affinity mask: a bench may pin itself.
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = info
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let model = info
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map_or("unknown CPU", |rest| {
            rest.trim_start_matches([' ', '\t', ':']).trim()
        });
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{cpus} CPUs ({model}), kernel {release}")
}

/// `1234567.8` → "1,234,568": large counts stay readable in a table.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}
