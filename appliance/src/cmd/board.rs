//! `labboot board …`: the boards of a running appliance, through its HTTP API
//! (`appliance/API.md`): list and show them, approve unknown ones, switch their power and
//! maintenance mode, reserve and release them, boot one's own kernel on a reserved one, and
//! follow (or type on) a board's serial console.

use anyhow::anyhow;
use serde_json::{json, Value};

use crate::client::console;
use crate::client::table::{self, Table};
use crate::client::{encode, ignore_closed_stdout, ApiArgs, ApiClient, Out, API_PREFIX};

/// `labboot board …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BoardCommand {
    /// List the boards: state, health, approval, address, last check-in and current job.
    List,
    /// Show one board: its fields, what its agent reported and its latest events.
    Show {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
    },
    /// Approve a board that checked in with an unknown identity (health "pending").
    Approve {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// The device type to give the board.
        #[arg(long, value_name = "TYPE")]
        device_type: Option<String>,
    },
    /// Switch a board's power on or off, or cycle it (refused while a job runs).
    Power {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// What to do with the power.
        #[arg(value_enum)]
        action: PowerAction,
    },
    /// Put a board into maintenance (it stops at the U-Boot prompt) or back to idle (refused
    /// while a job runs).
    Maintenance {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// `on` enters maintenance, `off` leaves it.
        #[arg(value_enum)]
        mode: OnOff,
    },
    /// Reserve an idle board for yourself: the scheduler gives it no job until you release it
    /// or its time is up (it is powered on if it was off; refused while a job runs).
    Reserve {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// How long: 90s, 30m, 2h, 1d, 1h30m (a bare number is seconds; default 1h).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
        /// What for (shown with the board).
        #[arg(long)]
        note: Option<String>,
    },
    /// Release a reserved board: it is powered off, then boots the master and takes jobs again.
    Release {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
    },
    /// Boot your own kernel on a board you reserved, the network way (files over TFTP, the root
    /// over NFS or NBD). PATHs are read on the appliance's host (relative ones are made
    /// absolute here).
    Boot {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// The kernel.
        #[arg(long, value_name = "URL|PATH")]
        kernel: String,
        /// An initrd.
        #[arg(long, value_name = "URL|PATH")]
        initrd: Option<String>,
        /// A device tree (default: the board's own).
        #[arg(long, value_name = "URL|PATH")]
        dtb: Option<String>,
        /// Kernel arguments after the console and the root.
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        append: Option<String>,
        /// A directory exported read-write over NFS as the root.
        #[arg(long, value_name = "DIR", conflicts_with = "nbdroot")]
        nfsroot: Option<String>,
        /// An image exported over NBD (copy-on-write) as the root.
        #[arg(long, value_name = "IMAGE")]
        nbdroot: Option<String>,
    },
    /// Follow a board's serial console: its bytes on standard output as they come (the last
    /// 64 KiB first); Ctrl-C leaves. Any number of people can follow one console.
    Console {
        /// The board's id.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// Take the console's keyboard too (one holder at a time; refused while a job or
        /// someone else holds it): the terminal goes raw and what you type goes to the board;
        /// `~.` at the start of a line leaves.
        #[arg(long)]
        write: bool,
    },
}

/// Seconds of a duration such as `90s`, `30m`, `2h`, `1d` or `1h30m` (a bare number is
/// seconds).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let mut total: u64 = 0;
    let mut number = String::new();
    let too_long = || format!("'{text}' is too long");
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "'{text}': a number with a unit s, m, h or d, e.g. 2h"
                ))
            }
        };
        if number.is_empty() {
            return Err(format!("'{text}': a number before each unit, e.g. 1h30m"));
        }
        let n: u64 = number.parse().map_err(|_| too_long())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
        number.clear();
    }
    if !number.is_empty() {
        if total > 0 {
            return Err(format!(
                "'{text}': a unit after the last number (s, m, h or d)"
            ));
        }
        total = number.parse().map_err(|_| too_long())?;
    }
    if total == 0 {
        return Err(format!("'{text}': more than 0 seconds"));
    }
    Ok(total)
}

/// A URL as it is, a path made absolute (the appliance reads it on its host).
fn source(s: &str) -> anyhow::Result<String> {
    if s.contains("://") || s.is_empty() {
        return Ok(s.to_string());
    }
    let p = std::path::absolute(s).map_err(|e| anyhow!("{s}: {e}"))?;
    Ok(p.to_string_lossy().into_owned())
}

/// What `board power` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerAction {
    /// Switch the power on.
    On,
    /// Switch the power off.
    Off,
    /// Switch the power off, then on.
    Cycle,
}

impl PowerAction {
    /// The action's name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
        }
    }
}

/// `on` or `off`, as `board maintenance` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enter maintenance.
    On,
    /// Leave maintenance.
    Off,
}

impl OnOff {
    /// The mode's name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            OnOff::On => "on",
            OnOff::Off => "off",
        }
    }
}

/// Runs `labboot board …`.
pub fn run(api: ApiArgs, c: BoardCommand) -> anyhow::Result<()> {
    let client = ApiClient::from_args(&api)?;
    let mut out = Out::stdout();
    ignore_closed_stdout(execute(&client, &mut out, api.json, c))
}

fn execute(client: &ApiClient, out: &mut Out, json: bool, c: BoardCommand) -> anyhow::Result<()> {
    match c {
        BoardCommand::List => {
            let boards: Value = client.get_json("/boards")?;
            if json {
                return out.json(&boards);
            }
            let list = boards
                .as_array()
                .ok_or_else(|| anyhow!("GET {API_PREFIX}/boards: the answer is not a list"))?;
            out.text(&boards_table(list).render())
        }
        BoardCommand::Show { id } => {
            let board: Value = client.get_json(&format!("/boards/{}", encode(&id)))?;
            if json {
                out.json(&board)
            } else {
                out.text(&board_text(&board))
            }
        }
        BoardCommand::Approve { id, device_type } => {
            let body = match device_type {
                Some(t) => json!({ "device_type": t }),
                None => json!({}),
            };
            let board: Value =
                client.post_json(&format!("/boards/{}/approve", encode(&id)), &body)?;
            if json {
                return out.json(&board);
            }
            let mut line = format!("board {} approved", table::get(&board, "id"));
            if let Some(t) = board.get("device_type").and_then(Value::as_str) {
                line.push_str(&format!(" ({t})"));
            }
            out.line(&table::clean(&line))
        }
        BoardCommand::Power { id, action } => {
            let path = format!("/boards/{}/power/{}", encode(&id), action.as_str());
            let answer: Value = client.post_empty(&path)?;
            if json {
                return out.json(&answer);
            }
            let power = match answer.get("power") {
                Some(Value::Null) | None => action.as_str().to_string(),
                other => table::cell(other),
            };
            out.line(&table::clean(&format!("board {id}: power {power}")))
        }
        BoardCommand::Maintenance { id, mode } => {
            let path = format!("/boards/{}/maintenance/{}", encode(&id), mode.as_str());
            let board: Value = client.post_empty(&path)?;
            if json {
                return out.json(&board);
            }
            out.line(&state_line(&board))
        }
        BoardCommand::Reserve { id, duration, note } => {
            let mut body = json!({});
            if let Some(d) = duration {
                body["for_seconds"] = json!(d);
            }
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            let board: Value =
                client.post_json(&format!("/boards/{}/reserve", encode(&id)), &body)?;
            if json {
                return out.json(&board);
            }
            let r = board.get("reservation").cloned().unwrap_or(Value::Null);
            out.line(&table::clean(&format!(
                "board {id} reserved until {} (by {}), powered {}",
                table::get(&r, "until"),
                table::get(&r, "by"),
                table::get(&board, "powered")
            )))
        }
        BoardCommand::Release { id } => {
            let board: Value = client.post_empty(&format!("/boards/{}/release", encode(&id)))?;
            if json {
                return out.json(&board);
            }
            out.line(&table::clean(&format!(
                "board {id} released: it boots the master and takes jobs again"
            )))
        }
        BoardCommand::Boot {
            id,
            kernel,
            initrd,
            dtb,
            append,
            nfsroot,
            nbdroot,
        } => {
            let mut body = json!({ "kernel": source(&kernel)? });
            for (key, value) in [
                ("initrd", initrd),
                ("dtb", dtb),
                ("nfsroot", nfsroot),
                ("nbdroot", nbdroot),
            ] {
                if let Some(v) = value {
                    body[key] = json!(source(&v)?);
                }
            }
            if let Some(a) = append {
                body["append"] = json!(a);
            }
            let board: Value = client.post_json(&format!("/boards/{}/boot", encode(&id)), &body)?;
            if json {
                return out.json(&board);
            }
            let r = board.get("reservation").cloned().unwrap_or(Value::Null);
            out.line(&table::clean(&format!(
                "board {id} boots {} (reserved until {})",
                table::get(&body, "kernel"),
                table::get(&r, "until")
            )))
        }
        BoardCommand::Console { id, write } => console::run(client, &id, write),
    }
}

/// `until 2026-12-04T15:00:00Z by http.tokens[0]: note`, or `-`.
fn reservation_cell(board: &Value) -> String {
    let Some(r) = board.get("reservation").filter(|r| r.is_object()) else {
        return "-".to_string();
    };
    let mut s = format!(
        "until {} by {}",
        table::get(r, "until"),
        table::get(r, "by")
    );
    if let Some(n) = r
        .get("note")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        s.push_str(&format!(": {}", table::clean(n)));
    }
    s
}

/// `board qemu-01: maintenance, online`.
fn state_line(board: &Value) -> String {
    format!(
        "board {}: {}, {}",
        table::get(board, "id"),
        table::get(board, "state"),
        table::get(board, "health")
    )
}

/// The boards as a table: ID, DEVICE TYPE, STATE, HEALTH, POWER, APPROVED, ADDRESS, LAST
/// CHECK-IN, JOB, RESERVED (until when).
fn boards_table(boards: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "DEVICE TYPE",
        "STATE",
        "HEALTH",
        "POWER",
        "APPROVED",
        "ADDRESS",
        "LAST CHECK-IN",
        "JOB",
        "RESERVED",
    ]);
    for board in boards {
        let mut row: Vec<String> = [
            "id",
            "device_type",
            "state",
            "health",
            "powered",
            "approved",
            "address",
            "last_checkin",
            "current_job",
        ]
        .iter()
        .map(|k| table::get(board, k))
        .collect();
        row.push(match board.pointer("/reservation/until") {
            Some(until) => table::cell(Some(until)),
            None => "-".to_string(),
        });
        t.row(row);
    }
    t
}

/// A board's `key: value` lines, then its events (time, kind, message) as a table.
fn board_text(board: &Value) -> String {
    let info = board.get("info").cloned().unwrap_or(Value::Null);
    let memory = match info.get("memory_kb").and_then(Value::as_u64) {
        Some(kb) => format!("{kb} kB"),
        None => table::get(&info, "memory_kb"),
    };
    let pairs = vec![
        ("id", table::get(board, "id")),
        ("device type", table::get(board, "device_type")),
        ("state", table::get(board, "state")),
        ("health", table::get(board, "health")),
        ("powered", table::get(board, "powered")),
        ("reservation", reservation_cell(board)),
        ("approved", table::get(board, "approved")),
        ("from config", table::get(board, "from_config")),
        ("mac", table::get(board, "mac")),
        ("address", table::get(board, "address")),
        ("cloned", table::get(board, "cloned")),
        ("current job", table::get(board, "current_job")),
        ("last check-in", table::get(board, "last_checkin")),
        ("kernel", table::get(&info, "kernel")),
        ("cpus", table::get(&info, "cpus")),
        ("memory", memory),
        ("macs", table::get(&info, "macs")),
        ("addresses", table::get(&info, "addresses")),
    ];
    let mut text = table::fields(&pairs);
    let events = board
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        text.push_str("\nno events\n");
    } else {
        let mut t = Table::new(&["TIME", "KIND", "MESSAGE"]);
        for event in events {
            t.row(
                ["time", "kind", "message"]
                    .iter()
                    .map(|k| table::get(event, k))
                    .collect(),
            );
        }
        text.push('\n');
        text.push_str(&t.render());
    }
    text
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use crate::client::testing::{answer, fake_server, header, Captured};
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: BoardCommand,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("board").chain(args.iter().copied()))
    }

    #[test]
    fn client_board_arguments() {
        Cli::command().debug_assert();
        assert!(matches!(
            parse(&["list", "--json"]).unwrap().command,
            BoardCommand::List
        ));
        assert!(matches!(
            parse(&["show", "qemu-01"]).unwrap().command,
            BoardCommand::Show { ref id } if id == "qemu-01"
        ));
        assert!(matches!(
            parse(&["approve", "b1", "--device-type", "rpi4"]).unwrap().command,
            BoardCommand::Approve { ref device_type, .. } if device_type.as_deref() == Some("rpi4")
        ));
        assert!(matches!(
            parse(&["power", "b1", "cycle"]).unwrap().command,
            BoardCommand::Power {
                action: PowerAction::Cycle,
                ..
            }
        ));
        assert!(matches!(
            parse(&["maintenance", "b1", "off", "--server", "x"])
                .unwrap()
                .command,
            BoardCommand::Maintenance {
                mode: OnOff::Off,
                ..
            }
        ));
        assert!(matches!(
            parse(&["console", "b1"]).unwrap().command,
            BoardCommand::Console { ref id, write: false } if id == "b1"
        ));
        assert!(matches!(
            parse(&["console", "b1", "--write"]).unwrap().command,
            BoardCommand::Console { write: true, .. }
        ));
        for bad in [
            &["power", "b1", "reset"][..],
            &["console"],
            &["console", ""],
            &["maintenance", "b1"],
            &["show", ""],
            &["show"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_board_wired_into_labboot() {
        let cli = crate::cli::Cli::try_parse_from([
            "labboot", "board", "power", "b1", "on", "--token", "t",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Board { api, command } => {
                assert_eq!(api.token.as_deref(), Some("t"));
                assert!(matches!(
                    command,
                    BoardCommand::Power {
                        action: PowerAction::On,
                        ..
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    fn boards() -> Value {
        json!([
            {"id": "qemu-01", "device_type": "labboot-qemu-arm64", "state": "idle", "health": "online",
             "approved": true, "from_config": true, "mac": "02:00:00:00:00:01", "address": "10.78.0.50",
             "cloned": null, "current_job": null, "last_checkin": "2026-12-04T13:00:00Z",
             "powered": "on", "reservation": {"until": "2026-12-04T15:00:00Z", "note": "bisecting",
             "by": "http.tokens[0]", "since": "2026-12-04T13:00:00Z", "boot": null},
             "info": {"kernel": "6.1.0", "cpus": 2, "memory_kb": 1000000, "macs": ["02:00:00:00:00:01"],
                      "addresses": ["10.78.0.50", "fe80::1"]}},
            {"id": "new-board", "device_type": null, "state": "idle", "health": "pending",
             "approved": false, "address": null, "last_checkin": null, "current_job": 12}
        ])
    }

    #[test]
    fn client_board_table() {
        assert_eq!(
            boards_table(boards().as_array().unwrap()).render(),
            "ID         DEVICE TYPE         STATE  HEALTH   POWER  APPROVED  ADDRESS     LAST CHECK-IN         JOB  RESERVED\n\
             qemu-01    labboot-qemu-arm64  idle   online   on     yes       10.78.0.50  2026-12-04T13:00:00Z  -    2026-12-04T15:00:00Z\n\
             new-board  -                   idle   pending  -      no        -           -                     12   -\n"
        );
    }

    #[test]
    fn client_board_show_text() {
        let mut board = boards()[0].clone();
        board["events"] = json!([
            {"time": "2026-12-04T12:59:00Z", "kind": "checkin", "message": "first check-in"},
            {"time": "2026-12-04T13:00:00Z", "kind": "power", "message": "cycle\nby admin"}
        ]);
        let text = board_text(&board);
        assert!(
            text.starts_with("id:            qemu-01\ndevice type:   labboot-qemu-arm64\n"),
            "{text}"
        );
        assert!(text.contains("\napproved:      yes\n"), "{text}");
        assert!(text.contains("\npowered:       on\n"), "{text}");
        assert!(
            text.contains(
                "\nreservation:   until 2026-12-04T15:00:00Z by http.tokens[0]: bisecting\n"
            ),
            "{text}"
        );
        assert!(text.contains("\ncloned:        -\n"), "{text}");
        assert!(text.contains("\nmemory:        1000000 kB\n"), "{text}");
        assert!(
            text.contains("\naddresses:     10.78.0.50, fe80::1\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n\nTIME                  KIND     MESSAGE\n\
                 2026-12-04T12:59:00Z  checkin  first check-in\n\
                 2026-12-04T13:00:00Z  power    cycle by admin\n"
            ),
            "{text}"
        );
        let text = board_text(&boards()[1]);
        assert!(text.contains("\nkernel:        -\n"), "{text}");
        assert!(text.contains("\nreservation:   -\n"), "{text}");
        assert!(text.ends_with("\n\nno events\n"), "{text}");
    }

    #[test]
    fn client_board_actions() {
        let (url, heads) = fake_server(vec![
            answer(
                "200 OK",
                "application/json",
                &json!({"id": "new-board", "device_type": "rpi4", "state": "idle", "approved": true}).to_string(),
            ),
            answer("200 OK", "application/json", r#"{"board": "b1", "power": "cycle"}"#),
            answer("409 Conflict", "application/json", r#"{"error": "board b1 runs job 12"}"#),
            answer("200 OK", "application/json", r#"{"id": "b1", "state": "maintenance", "health": "online"}"#),
        ]);
        let client = ApiClient::new(&url, Some("t")).unwrap();
        let captured = Captured::default();
        let mut out = captured.out();
        let approve = BoardCommand::Approve {
            id: "new-board".into(),
            device_type: Some("rpi4".into()),
        };
        execute(&client, &mut out, false, approve).unwrap();
        let head = heads.recv().unwrap();
        assert!(
            head.starts_with("POST /api/v1/boards/new-board/approve "),
            "{head}"
        );
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        assert!(head.ends_with(r#"{"device_type":"rpi4"}"#), "{head}");
        execute(
            &client,
            &mut out,
            false,
            BoardCommand::Power {
                id: "b1".into(),
                action: PowerAction::Cycle,
            },
        )
        .unwrap();
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/power/cycle "));
        let err = execute(
            &client,
            &mut out,
            false,
            BoardCommand::Power {
                id: "b1".into(),
                action: PowerAction::Off,
            },
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "POST /api/v1/boards/b1/power/off: 409: board b1 runs job 12"
        );
        execute(
            &client,
            &mut out,
            false,
            BoardCommand::Maintenance {
                id: "b1".into(),
                mode: OnOff::On,
            },
        )
        .unwrap();
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/power/off "));
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/maintenance/on "));
        assert_eq!(
            captured.text(),
            "board new-board approved (rpi4)\nboard b1: power cycle\nboard b1: maintenance, online\n"
        );
    }

    #[test]
    fn client_board_durations() {
        assert_eq!(parse_duration("20s"), Ok(20));
        assert_eq!(parse_duration("45"), Ok(45));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in [
            "",
            "0",
            "0s",
            "h",
            "2x",
            "1h30",
            "-5m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse(&["reserve", "b1", "--for", "2 weeks"]).is_err());
        assert!(parse(&["boot", "b1"]).is_err(), "--kernel is required");
        assert!(parse(&[
            "boot",
            "b1",
            "--kernel",
            "k",
            "--nfsroot",
            "/a",
            "--nbdroot",
            "/b"
        ])
        .is_err());
    }

    #[test]
    fn client_board_reserve_boot_release() {
        let (url, heads) = fake_server(vec![
            answer(
                "200 OK",
                "application/json",
                &json!({"id": "b1", "powered": "on", "reservation":
                        {"until": "2026-12-04T15:00:00Z", "by": "http.tokens[0]"}})
                .to_string(),
            ),
            answer(
                "200 OK",
                "application/json",
                &json!({"id": "b1", "reservation": {"until": "2026-12-04T15:00:00Z"}}).to_string(),
            ),
            answer(
                "200 OK",
                "application/json",
                r#"{"id": "b1", "reservation": null}"#,
            ),
            answer(
                "409 Conflict",
                "application/json",
                r#"{"error": "board b1 is not reserved"}"#,
            ),
        ]);
        let client = ApiClient::new(&url, Some("t")).unwrap();
        let captured = Captured::default();
        let mut out = captured.out();
        let run = |out: &mut Out, args: &[&str]| {
            execute(&client, out, false, parse(args).unwrap().command)
        };
        run(
            &mut out,
            &["reserve", "b1", "--for", "2h", "--note", "bisect"],
        )
        .unwrap();
        let head = heads.recv().unwrap();
        assert!(
            head.starts_with("POST /api/v1/boards/b1/reserve "),
            "{head}"
        );
        let body = |head: &str| -> Value {
            serde_json::from_str(head.rsplit("\r\n\r\n").next().unwrap()).unwrap()
        };
        assert_eq!(body(&head), json!({"for_seconds": 7200, "note": "bisect"}));
        run(
            &mut out,
            &[
                "boot",
                "b1",
                "--kernel",
                "Image",
                "--initrd",
                "http://h/i.gz",
                "--append",
                "-v quiet",
            ],
        )
        .unwrap();
        let head = heads.recv().unwrap();
        assert!(head.starts_with("POST /api/v1/boards/b1/boot "), "{head}");
        let kernel = std::env::current_dir().unwrap().join("Image");
        assert_eq!(
            body(&head),
            json!({"kernel": kernel.to_str().unwrap(), "initrd": "http://h/i.gz", "append": "-v quiet"})
        );
        run(&mut out, &["release", "b1"]).unwrap();
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("POST /api/v1/boards/b1/release "));
        let err = run(&mut out, &["release", "b1"]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "POST /api/v1/boards/b1/release: 409: board b1 is not reserved"
        );
        assert_eq!(
            captured.text(),
            format!(
                "board b1 reserved until 2026-12-04T15:00:00Z (by http.tokens[0]), powered on\n\
                 board b1 boots {} (reserved until 2026-12-04T15:00:00Z)\n\
                 board b1 released: it boots the master and takes jobs again\n",
                kernel.display()
            )
        );
    }
}
