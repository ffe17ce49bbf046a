//! The module's diagnostics on stderr, one whole line per write(2).
//!
//! The client copies the module's stderr into the deployment log; the 4.x/5.x client makes a log
//! record of every chunk it reads from the pipe, so a line written in pieces (`eprintln!` issues
//! one write per formatted part) shows up split across records. Each line is therefore formatted
//! in full, newline included, and handed to the unbuffered stderr in a single write (a pipe
//! keeps a write of up to 4096 bytes in one piece).

use std::io::{self, Write};

/// The prefix of every diagnostic line.
pub const PREFIX: &str = "server-migration: ";

/// Writes `message` to `out` as lines `prefix + line + "\n"`, one `write_all` per line (a message
/// with newlines becomes several lines; an empty one a single line).
pub fn write_lines(out: &mut dyn Write, prefix: &str, message: &str) -> io::Result<()> {
    let mut lines = message.lines().peekable();
    if lines.peek().is_none() {
        return out.write_all(format!("{prefix}\n").as_bytes());
    }
    for line in lines {
        let mut whole = String::with_capacity(prefix.len() + line.len() + 1);
        whole.push_str(prefix);
        whole.push_str(line);
        whole.push('\n');
        out.write_all(whole.as_bytes())?;
    }
    Ok(())
}

/// `server-migration: MESSAGE` on stderr, line by line (errors writing stderr are ignored: there
/// is nowhere left to report them).
pub fn report(message: &str) {
    let _ = write_lines(&mut io::stderr(), PREFIX, message);
}

/// `text` on stderr as it is (the usage text), line by line.
pub fn plain(text: &str) {
    let _ = write_lines(&mut io::stderr(), "", text);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call's bytes, accepting at most `limit` bytes per call (a short
    /// write, as a pipe may do), so `write_all`'s retries show up as further calls.
    struct Calls {
        writes: Vec<Vec<u8>>,
        limit: usize,
    }

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.limit);
            self.writes.push(buf[..n].to_vec());
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_is_one_write_ending_in_a_newline() {
        let mut calls = Calls {
            writes: Vec::new(),
            limit: usize::MAX,
        };
        let message = format!(
            "installed stage dual (servers: {}, {}); changed: /etc/mender/mender.conf\nsecond line\n",
            "https://old.example.com", "https://new.example.com"
        );
        write_lines(&mut calls, PREFIX, &message).unwrap();
        write_lines(&mut calls, PREFIX, "").unwrap();
        let writes: Vec<String> = calls
            .writes
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect();
        assert_eq!(
            writes,
            [
                "server-migration: installed stage dual (servers: https://old.example.com, https://new.example.com); changed: /etc/mender/mender.conf\n",
                "server-migration: second line\n",
                "server-migration: \n",
            ]
        );
    }

    #[test]
    fn a_short_write_is_completed_not_dropped() {
        let mut calls = Calls {
            writes: Vec::new(),
            limit: 10,
        };
        write_lines(&mut calls, PREFIX, "a line longer than ten bytes").unwrap();
        assert_eq!(
            calls.writes.concat(),
            b"server-migration: a line longer than ten bytes\n"
        );
    }
}
