#![forbid(unsafe_code)]

fn main() {
    eprintln!("query-host: not built yet");
    std::process::exit(1);
}
