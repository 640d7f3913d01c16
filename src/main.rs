//! The `wesam` command.

fn main() {
    if let Err(e) = wesam::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
