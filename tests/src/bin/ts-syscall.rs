//! A program that makes one system call a vsock backend must not make (or,
//! as the control, one it may), to show that the jailer's seccomp filter
//! kills it. Prints `ok` and exits 0 if it was still alive afterwards.

fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    // SAFETY: plain system calls; their results are only printed.
    let r = unsafe {
        match what.as_str() {
            "unix" => libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            "inet" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            "fork" => libc::syscall(libc::SYS_fork) as i32,
            "ptrace" => libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) as i32,
            "thread" => std::thread::spawn(|| 7).join().map(|v| v - 7).unwrap_or(-1),
            _ => {
                eprintln!("usage: ts-syscall unix|inet|fork|ptrace|thread");
                std::process::exit(2)
            }
        }
    };
    if what == "fork" && r == 0 {
        std::process::exit(0);
    }
    println!("ok {r}");
}
