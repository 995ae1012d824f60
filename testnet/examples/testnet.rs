//! A stand-alone driver for the testnet, for trying it by hand:
//! `cargo run -p tails-testnet --example testnet -- up|down|status|join [STATE_DIR NETNS PREFIX]`.

use std::time::Instant;

use tails_testnet::{down, join_options, status, up, Config};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Config::default();
    if args.len() == 4 {
        cfg = Config {
            state_dir: args[1].clone().into(),
            netns: args[2].clone(),
            subnet_prefix: args[3].clone(),
        };
    }
    let t0 = Instant::now();
    let say = |m: &str| eprintln!("[{:5.1} s] {m}", t0.elapsed().as_secs_f64());
    let r = match args.first().map(String::as_str) {
        Some("up") => up(&cfg, &say).map(|s| format!("{s:#?}")),
        Some("down") => down(&cfg).map(|was| {
            if was {
                "testnet stopped".into()
            } else {
                "testnet was not up".into()
            }
        }),
        Some("status") => status(&cfg).map(|s| format!("{s:#?}")),
        Some("join") => join_options(&cfg).map(|o| o.join("\n")),
        _ => {
            eprintln!("usage: testnet up|down|status|join [STATE_DIR NETNS PREFIX]");
            std::process::exit(2);
        }
    };
    match r {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("testnet: error: {e}");
            std::process::exit(1);
        }
    }
}
