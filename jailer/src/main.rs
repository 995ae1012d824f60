//! `tails-jailer SPEC-JSON`: run one program as the spec says (see the
//! library's `jail` module). Errors before the program starts are one line
//! on stderr and exit status 125.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(spec), None) = (args.next(), args.next()) else {
        eprintln!("usage: tails-jailer SPEC-JSON (the host agent writes the spec)");
        std::process::exit(125);
    };
    let spec: tails_jailer::JailSpec = match serde_json::from_str(&spec.to_string_lossy()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tails-jailer: bad spec: {e}");
            std::process::exit(125);
        }
    };
    let Err(e) = tails_jailer::jail::run(&spec);
    eprintln!("tails-jailer: {}: {e}", spec.name);
    std::process::exit(125);
}
