//! Builds the images once, with a stand-in agent, and prints the manifest.
//!
//! `cargo run -p tails-images --example build -- [--force] [CACHE_DIR] [AGENT]`
//! (defaults: /tmp/tails-images-example, /bin/busybox as both agents).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tails_images::{build, BuildInputs, TermProgress};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    args.retain(|a| a != "--force");
    let cache_dir = PathBuf::from(
        args.first()
            .map_or("/tmp/tails-images-example", String::as_str),
    );
    let agent = PathBuf::from(args.get(1).map_or("/bin/busybox", String::as_str));
    let inputs = BuildInputs {
        torvm_agent: agent.clone(),
        appvm_agent: agent,
        services_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../services"),
        cache_dir,
    };
    let started = Instant::now();
    match build(&inputs, &TermProgress::new(), force) {
        Ok(images) => {
            println!(
                "built in {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                images.dir.display()
            );
            match serde_json::to_string_pretty(&images.manifest) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("manifest: {e}"),
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
