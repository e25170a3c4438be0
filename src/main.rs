//! Carepost: secure messaging between a small medical practice and its patients.
//! The command line: serve (the default), demo, admin, check-config.

use carepost::{attachments, auth, backup, clock, config, db, demo, logger, mail, staff, web};
use clap::{Parser, Subcommand};
use clock::Clock;
use config::Config;
use db::DataDir;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "carepost",
    version,
    about = "Secure messaging between a practice and its patients"
)]
struct Cli {
    /// Configuration file (TOML); see config.example.toml.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Data folder (overrides `data` and CAREPOST_DATA).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<String>,
    /// Address and port to listen on (overrides `listen` and CAREPOST_LISTEN).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the practice view and the patient portal (the default).
    Serve {
        /// Seed the demo practice into an empty data folder first.
        #[arg(long)]
        demo: bool,
    },
    /// Same as `serve --demo`.
    Demo,
    /// Administrator accounts.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Check the configuration and exit.
    CheckConfig,
    /// Print an example configuration file with every option and its default.
    ExampleConfig,
    /// Email: `carepost mail test ADDRESS` sends one test email and prints the server's answer.
    Mail {
        #[command(subcommand)]
        action: MailCommand,
    },
    /// Make a consistent, checked copy of the data folder (database and attachments) while the
    /// server runs.
    Backup { dest: PathBuf },
    /// Restore a backup into the data folder (--data): an empty one, or a used one with --force.
    Restore {
        src: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// The audit log: `carepost audit verify` checks its hash chain.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Re-hash every stored attachment and check every reference; exits non-zero on any
    /// missing, corrupt or unreferenced file. Safe while the server runs.
    Verify,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the chain; non-zero exit naming the first entry that was altered or removed.
    Verify,
}

#[derive(Subcommand)]
enum MailCommand {
    /// Send one test email through the configured mail server.
    Test { address: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator (and name the practice on a new install). Idempotent: an existing
    /// administrator with this email is left as it is. The password is read from standard input,
    /// or asked for twice on a terminal.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Degree or title, e.g. MD or Practice manager.
        #[arg(long, default_value = "")]
        degree: String,
        /// Access level 1-4 (1 front office, 2 clinical, 3 NP/PA, 4 physician).
        #[arg(long, default_value_t = 1)]
        level: u8,
        /// The practice's name; required when the practice is not set up yet.
        #[arg(long, default_value = "")]
        practice: String,
    },
}

fn main() -> ExitCode {
    carepost::allocator::tune();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("carepost: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let mut config = Config::load(cli.config.as_deref(), &|name| std::env::var(name).ok())?;
    if let Some(data) = &cli.data {
        config.data = data.clone();
    }
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    config.validate()?;
    mail::SmtpSettings::from_config(&config)?;
    Ok(config)
}

fn run(cli: Cli) -> Result<(), String> {
    let config = load_config(&cli)?;
    match cli.command {
        None => serve(config, false),
        Some(Command::Serve { demo }) => serve(config, demo),
        Some(Command::Demo) => serve(config, true),
        Some(Command::CheckConfig) => {
            println!("The configuration is valid.");
            Ok(())
        }
        Some(Command::Verify) => verify(&config),
        Some(Command::Backup { dest }) => {
            backup::backup(&config.data_dir(), &dest).map(|m| println!("{m}"))
        }
        Some(Command::Restore { src, force }) => {
            backup::restore(&src, &config.data_dir(), force).map(|m| println!("{m}"))
        }
        Some(Command::Audit {
            action: AuditCommand::Verify,
        }) => backup::audit_verify(&config.data_dir()).map(|m| println!("{m}")),
        Some(Command::Mail {
            action: MailCommand::Test { address },
        }) => mail_test(&config, &address),
        Some(Command::ExampleConfig) => {
            print!("{}", config::example_toml());
            Ok(())
        }
        Some(Command::Admin {
            action:
                AdminCommand::Create {
                    email,
                    name,
                    degree,
                    level,
                    practice,
                },
        }) => {
            let data = DataDir::open(&config.data_dir())?;
            let password = read_new_password()?;
            let new = staff::NewAdministrator {
                practice_name: &practice,
                name: &name,
                email: &email,
                degree: &degree,
                access_level: level,
                password: &password,
                password_again: &password,
            };
            let mut conn = data.connect()?;
            match staff::create_administrator(&mut conn, &new, None, Clock::system().now()) {
                Ok(Ok(staff::Created::New(_))) => {
                    println!("Administrator {email} created.");
                    Ok(())
                }
                Ok(Ok(staff::Created::AlreadyExists)) => {
                    println!("Administrator {email} already exists; nothing changed.");
                    Ok(())
                }
                Ok(Err(errors)) => Err(errors
                    .iter()
                    .map(|(field, message)| format!("{}: {message}", field.replace('_', " ")))
                    .collect::<Vec<_>>()
                    .join(" ")),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

fn mail_test(config: &Config, address: &str) -> Result<(), String> {
    if auth::email_problem(address).is_some() {
        return Err(format!("\"{address}\" is not an email address."));
    }
    let settings = mail::SmtpSettings::from_config(config)?
        .ok_or("No mail server is configured: set smtp.host (and the other smtp options) first.")?;
    let outcome = mail::send_now(
        &settings,
        address,
        "Carepost test email",
        "This is a test email from Carepost. If you can read it, email delivery works.\n",
    )?;
    match outcome {
        mail::Outcome::Sent(reply) => {
            println!("Sent. The mail server answered: {reply}");
            Ok(())
        }
        mail::Outcome::Retry(reason) | mail::Outcome::Refused(reason) => {
            Err(format!("Not sent. {reason}"))
        }
    }
}

fn verify(config: &Config) -> Result<(), String> {
    let data = DataDir::open_existing(&config.data_dir())?;
    let conn = data.connect()?;
    let references = db::attachments::all_references(&conn)
        .map_err(|e| format!("cannot read the attachment records: {e}"))?;
    let store = attachments::Store::new(&data.path);
    let report = attachments::verify(&store, &references)
        .map_err(|e| format!("cannot read the attachment store: {e}"))?;
    for line in report
        .missing
        .iter()
        .chain(&report.corrupt)
        .chain(&report.unreferenced)
    {
        println!("{line}");
    }
    println!(
        "{} stored files checked, {} references: {} missing, {} corrupt, {} unreferenced.",
        report.checked,
        references.len(),
        report.missing.len(),
        report.corrupt.len(),
        report.unreferenced.len()
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err("the attachment store has problems (listed above).".into())
    }
}

/// A new password: asked twice without echo on a terminal, else the first line of stdin.
fn read_new_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = prompt_hidden("Password: ")?;
    let second = prompt_hidden("Password again: ")?;
    if first != second {
        return Err("The two passwords are not the same.".into());
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> Result<String, String> {
    use std::os::unix::io::AsRawFd;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: termios is plain data filled by tcgetattr; echo is restored before returning.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_tty {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Validity of the first-run setup link.
const SETUP_LINK_SECS: i64 = 30 * 60;

fn serve(config: Config, demo: bool) -> Result<(), String> {
    logger::init(&config.log_level);
    // An occupied port is reported before the data folder is touched.
    std::net::TcpListener::bind(&config.listen)
        .map_err(|e| web::describe_bind_error(&config.listen, &e))?;
    let data = DataDir::open(&config.data_dir())?;
    let smtp = mail::SmtpSettings::from_config(&config)?;
    if smtp.is_none() {
        log::info!("no mail server configured (smtp.host): emails stay in the outbox until one is");
    }
    mail::start(&data, Clock::system(), smtp, demo)?;
    web::serve(config, data, Clock::system(), |app| {
        let base = app.config.public_base();
        let now = app.clock.now();
        let mut conn = app.pool.get();
        if demo {
            let password = std::env::var("CAREPOST_DEMO_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty());
            let seeded = demo::seed(&mut conn, password, base, now)?;
            print!("{}", demo::logins_text(base, &seeded));
        }
        let practice =
            db::practice::get(&conn).map_err(|e| format!("cannot read the database: {e}"))?;
        if practice.is_none() {
            let token = db::practice::new_setup_token(&conn, now + SETUP_LINK_SECS)
                .map_err(|e| format!("cannot create the setup link: {e}"))?;
            // Printed, not logged: the link is a credential.
            println!(
                "First-run setup: open {base}/setup/{token} within 30 minutes to name the \
                 practice and create the first administrator."
            );
        }
        let _ = std::io::stdout().flush();
        Ok(())
    })
}
