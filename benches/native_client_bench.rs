//! The Rust client's side of the native-client benchmark (`benches/bench_native.py` drives
//! it): connects to the cluster at argv[1] (key from `$XPARL_CLUSTER_KEY`), ships argv[2]
//! (`bench_actors.py`), creates one `bench_actors:Adder`, then for every line `start n` read on
//! stdin makes `n` calls `add(i, 1)` (i from `start`), each timed and checked, and answers one
//! line: the `n` latencies in nanoseconds. It exits at the end of its input.

use std::io::{BufRead, Write};
use std::time::Instant;

use parl_client::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (address, module) = (args.next().ok_or("usage: ADDRESS MODULE")?, args.next().ok_or("no MODULE")?);
    let client = Client::builder(&address).ship_file(module).connect()?;
    let adder = client.actor("bench_actors:Adder").create(()).wait()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace().map(str::parse::<i64>);
        let (Some(Ok(start)), Some(Ok(n))) = (words.next(), words.next()) else {
            return Err(format!("expected `start n`, got {line:?}").into());
        };
        let mut samples = Vec::with_capacity(n.max(0) as usize);
        for i in start..start + n {
            let t0 = Instant::now();
            let sum: i64 = adder.call("add", (i, 1)).wait()?;
            samples.push(t0.elapsed().as_nanos().to_string());
            if sum != i + 1 {
                return Err(format!("add({i}, 1) returned {sum}").into());
            }
        }
        writeln!(out, "{}", samples.join(" "))?;
        out.flush()?;
    }
    Ok(())
}
