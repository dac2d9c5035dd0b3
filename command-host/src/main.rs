#![forbid(unsafe_code)]

fn main() {
    eprintln!("command-host: not built yet");
    std::process::exit(1);
}
