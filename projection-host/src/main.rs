#![forbid(unsafe_code)]

fn main() {
    eprintln!("projection-host: not built yet");
    std::process::exit(1);
}
