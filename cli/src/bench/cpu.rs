//! The CPU time of processes on this machine, read from /proc, for the
//! benchmarks that report it per operation (`bench ingest --cpu-of`,
//! `bench fanout --logger-pid`).

/// A process on this machine whose CPU time a benchmark reads: `--cpu-of NAME=PID`.
#[derive(Clone, Debug)]
pub(super) struct Watched {
    name: String,
    pid: u32,
}

/// Parses `NAME=PID`, refusing a process whose CPU time cannot be read.
pub(super) fn watched(arg: &str) -> Result<Watched, String> {
    let (name, pid) = arg
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{arg:?}: expected NAME=PID, for example logger=1234"))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("{arg:?}: {pid:?} is not a process id"))?;
    cpu_seconds(pid).ok_or_else(|| format!("{arg:?}: cannot read /proc/{pid}/stat"))?;
    Ok(Watched {
        name: name.to_owned(),
        pid,
    })
}

/// The name this client's own CPU time is reported under.
pub(super) const CLIENT: &str = "bench client";

/// The CPU time (user and system, in seconds) process `pid` has used so
/// far, from /proc, if it can be read.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses;
    // utime and stime are the 14th and 15th of the line, in clock ticks
    // (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The CPU time of each watched process and of this client, read together.
pub(super) fn read_cpu(watched: &[Watched]) -> Vec<(String, Option<f64>)> {
    watched
        .iter()
        .map(|w| (w.name.clone(), cpu_seconds(w.pid)))
        .chain([(CLIENT.to_owned(), cpu_seconds(std::process::id()))])
        .collect()
}

/// CPU µs per operation of each process read at both ends of `ops`
/// operations (a process that could not be read at either end is left out).
pub(super) fn cpu_per_op(
    before: &[(String, Option<f64>)],
    after: &[(String, Option<f64>)],
    ops: u64,
) -> Vec<(String, f64)> {
    if ops == 0 {
        return Vec::new();
    }
    before
        .iter()
        .zip(after)
        .filter_map(|((name, b), (_, a))| {
            let us = (a.as_ref()? - b.as_ref()?) * 1e6 / ops as f64;
            Some((name.clone(), (us * 100.0).round() / 100.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn cpu_of_takes_a_name_and_a_process_whose_cpu_can_be_read() {
        let me = std::process::id();
        let w = watched(&format!("logger={me}")).expect("this process");
        assert_eq!((w.name.as_str(), w.pid), ("logger", me));
        for (arg, says) in [
            ("logger".to_owned(), "expected NAME=PID"),
            (format!("={me}"), "expected NAME=PID"),
            ("logger=one".to_owned(), "\"one\" is not a process id"),
            ("logger=0".to_owned(), "cannot read /proc/0/stat"),
        ] {
            let err = watched(&arg).expect_err(&arg);
            assert!(err.contains(says), "{arg}: {err}");
        }
    }

    #[test]
    fn cpu_time_is_read_from_proc_and_shared_out_per_operation() {
        let me = std::process::id();
        let start = cpu_seconds(me).expect("this process's stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spun = 0u64;
        while cpu_seconds(me).expect("stat") < start + 0.05 && Instant::now() < deadline {
            spun = std::hint::black_box(spun.wrapping_add(1));
        }
        assert!(
            cpu_seconds(me).expect("stat") >= start + 0.05,
            "no CPU time counted"
        );

        let before = [
            ("logger".to_owned(), Some(1.0)),
            ("gone".to_owned(), None),
            (CLIENT.to_owned(), Some(2.0)),
        ];
        let after = [
            ("logger".to_owned(), Some(1.5)),
            ("gone".to_owned(), Some(3.0)),
            (CLIENT.to_owned(), Some(2.25)),
        ];
        assert_eq!(
            cpu_per_op(&before, &after, 1_000),
            [("logger".to_owned(), 500.0), (CLIENT.to_owned(), 250.0)]
        );
        assert!(cpu_per_op(&before, &after, 0).is_empty());
        let read = read_cpu(&[]);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, CLIENT);
        assert!(read[0].1.is_some());
    }
}
