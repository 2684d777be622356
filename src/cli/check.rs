//! `rekey check`: pre-merge verification of a pull request to the secrets repo.
//! Parses the flags, builds the request, runs [`crate::ops::check`] and renders.

use crate::cli::check_render;
use crate::cli::iamargs::IamArgs;
use crate::cli::netargs::{NetArgs, config_targets};
use crate::cli::output::{OutputFormat, Printer};
use crate::cli::pgpargs::SecretKeyArgs;
use crate::exit::Exit;
use crate::ops::check::{
    self as op, CheckRequest, CheckWorld, GitRepo, KeyVerifier, Liveness, PullOutcome, PullVerifier,
};
use crate::ops::world::{Event, Events, SystemClock};
use crate::pullsecret::catalog::Catalog;
use crate::pullsecret::dockerconfig::DockerConfig;
use crate::pullsecret::image::ImageRef;
use crate::secrets_repo::leakscan::Allowlist;
use anyhow::Context;
use std::path::PathBuf;

/// Check a pull request to the secrets repo before it merges.
///
/// Every rule comes from the base, never from the pull request: the
/// recipient policy (.rekey/recipients.asc) and the leak allowlist
/// (.rekey/leak-allowlist.toml). Changes to them are reported: recipients
/// added or removed (user ID, fingerprint, expiry), waivers added (they
/// waive nothing in the pull request that adds them).
///
/// Without a key: every changed secret file is a complete OpenPGP message
/// addressed to exactly the base's recipient policy, its metadata changed
/// with it and agrees, the layout holds, no unknown file is added under
/// .rekey/, and nothing is an executable, a symlink or a submodule. Leaks
/// are searched in everything the merge adds to history: every file version
/// of every commit in base..head (also one a later commit removed), every
/// commit message and file name, through base64, hex, gzip, zip, tar and
/// other encodings. With --key: each changed secret is decrypted and checked
/// as `rekey inspect` does, every current and previous key of the base and
/// head is searched for exactly (`known-key`), and a redacted summary shows
/// which regions rotated (old -> new key fingerprint), which were only
/// re-encrypted, and which hosts were added or removed. --verify-pull also
/// pulls the probe image with each changed secret. --iam-check exchanges
/// each leaked key at IAM: `verified` (live: revoke it) or `unverified`.
/// One JUnit test case per check. Exits 1 when a check fails.
///
/// Example:
///   rekey check --repo . --base origin/main --head HEAD
///   rekey check --repo . --base origin/main --head HEAD --key ci-key.asc \
///       --passphrase-env CI_KEY_PASSPHRASE --regions regions --output junit
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The secrets repo (a git work tree or bare repo).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The revision the pull request merges into (its policy applies).
    #[arg(long, value_name = "REV")]
    pub base: String,
    /// The pull request's revision.
    #[arg(long, value_name = "REV")]
    pub head: String,
    /// A secret key that can decrypt the secrets, to check their contents.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the secret key's passphrase from FILE (`-` reads stdin).
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the secret key's passphrase from the environment variable NAME.
    #[arg(long, value_name = "NAME", requires = "key")]
    pub passphrase_env: Option<String>,
    /// The region catalog, to check that each secret covers exactly its region's hosts.
    #[arg(long, value_name = "DIR", requires = "key")]
    pub regions: Option<PathBuf>,
    /// The leak allowlist (default: .rekey/leak-allowlist.toml at the base, if present).
    #[arg(long, value_name = "FILE")]
    pub allowlist: Option<PathBuf>,
    /// List only the failing checks in text output (the summary still counts all).
    #[arg(long)]
    pub failures_only: bool,
    /// Also pull the probe image with each changed secret (needs --key).
    #[arg(long, requires = "key")]
    pub verify_pull: bool,
    /// The image to pull with --verify-pull.
    #[arg(long, value_name = "REPO:TAG", default_value = crate::pullsecret::catalog::DEFAULT_PROBE_IMAGE)]
    pub image: String,
    #[command(flatten)]
    pub net: NetArgs,
    /// Exchange each leaked key found at IAM: a live one is `verified`
    /// (critical: revoke it), a refused one `unverified`; IAM unreachable is an error.
    #[arg(long)]
    pub iam_check: bool,
    #[command(flatten)]
    pub iam: IamArgs,
}

/// Grades leaked keys with IAM's token exchange (`--iam-check`).
struct IamVerifier {
    iam: crate::iam::Iam,
    runtime: tokio::runtime::Runtime,
}

impl KeyVerifier for IamVerifier {
    fn verify(&self, key: &crate::secret::ApiKey) -> anyhow::Result<Liveness> {
        match self.runtime.block_on(self.iam.exchange(key)) {
            Ok(crate::iam::Exchange::Token(_)) => Ok(Liveness::Live),
            Ok(crate::iam::Exchange::Refused { status, text }) => {
                Ok(Liveness::Refused(format!("HTTP {status}: {}", text.describe())))
            }
            Err(e) => Err(anyhow::Error::new(e).context("--iam-check: grading a leaked key")),
        }
    }
}

/// Pulls with the network options of the command line.
struct NetPull<'a> {
    printer: &'a Printer,
    net: &'a NetArgs,
    image: ImageRef,
}

impl PullVerifier for NetPull<'_> {
    fn pull(&self, secret: &str, config: &DockerConfig) -> anyhow::Result<PullOutcome> {
        match config_targets(config, secret, &self.image, secret) {
            Ok(targets) => Ok(PullOutcome::Checked(self.net.check(self.printer, targets)?)),
            Err(e) => Ok(PullOutcome::Unusable(format!("{e:#}"))),
        }
    }
}

/// Shows the operation's progress and warnings on stderr.
struct PrinterEvents<'a>(&'a Printer);

impl Events for PrinterEvents<'_> {
    fn event(&self, event: Event) {
        match event {
            Event::Status(line) => self.0.status(line),
            Event::Warning(line) => self.0.warn(line),
        }
    }
}

/// Runs `rekey check`.
pub fn run(printer: &Printer, args: Args) -> anyhow::Result<Exit> {
    printer.require("check", &[OutputFormat::Text, OutputFormat::Json, OutputFormat::Junit])?;
    let image = ImageRef::parse(&args.image).map_err(|e| anyhow::anyhow!("--image `{}` {e}", args.image))?;
    if args.verify_pull {
        args.net.client()?;
    }
    let keys = match &args.key {
        Some(key) => Some(
            SecretKeyArgs {
                key: key.clone(),
                passphrase_file: args.passphrase_file.clone(),
                passphrase_env: args.passphrase_env.clone(),
            }
            .load()?,
        ),
        None => None,
    };
    let catalog = args.regions.as_deref().map(Catalog::load).transpose()?;
    let allowlist = match &args.allowlist {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(Allowlist::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let request = CheckRequest {
        base: args.base.clone(),
        head: args.head.clone(),
        keys: keys.as_ref(),
        catalog: catalog.as_ref(),
        allowlist,
    };
    let pull = NetPull {
        printer,
        net: &args.net,
        image,
    };
    let verifier = match args.iam_check {
        true => Some(IamVerifier {
            iam: args.iam.client(&args.net.ca_cert)?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?,
        }),
        false => None,
    };
    let world = CheckWorld {
        git: &GitRepo(args.repo.clone()),
        pull: if args.verify_pull { Some(&pull) } else { None },
        iam: verifier.as_ref().map(|v| v as &dyn KeyVerifier),
        clock: &SystemClock,
        events: &PrinterEvents(printer),
    };
    let report = op::check(&request, &world)?;
    check_render::render(printer, &report, args.failures_only)?;
    Ok(Exit::problem_if(!report.ok))
}
