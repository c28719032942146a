//! The `comb` command.

fn main() -> std::process::ExitCode {
    comb::main()
}
