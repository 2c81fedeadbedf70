//! The admin commands: status, topics, conns, kick, delete, tree, reload, retention, ban and
//! unban.

use std::io::{self, BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::admin::{path_segment, AdminClient};
use crate::cli::{
    BanArgs, Cli, ConnsArgs, DeleteArgs, KickArgs, RetentionArgs, TopicsArgs, UnbanArgs,
};
use crate::failure::{Failure, Status};
use crate::output::emit;
use crate::tables;

pub(crate) fn status(cli: &Cli) -> Result<(), Failure> {
    let status = AdminClient::new(cli)?.get("/v1/status")?;
    print_object(cli, &status, tables::status)
}

pub(crate) fn topics(cli: &Cli, args: &TopicsArgs) -> Result<(), Failure> {
    let client = AdminClient::new(cli)?;
    let topics = match &args.topic {
        Some(topic) => vec![client.get(&format!("/v1/topics/{}", path_segment(topic.as_str())))?],
        None => list(&client.get("/v1/topics")?, "topics")?,
    };
    print_list(cli, &topics, tables::topics)
}

pub(crate) fn conns(cli: &Cli, args: &ConnsArgs) -> Result<(), Failure> {
    let mut path = format!("/v1/connections?limit={}", args.limit);
    if let Some(topic) = &args.topic {
        path.push_str(&format!("&topic={}", path_segment(topic.as_str())));
    }
    let reply = AdminClient::new(cli)?.get(&path)?;
    let connections = list(&reply, "connections")?;
    print_list(cli, &connections, tables::connections)?;
    if !cli.json {
        print_list_notes(&reply, connections.len());
    }
    Ok(())
}

pub(crate) fn kick(cli: &Cli, args: &KickArgs) -> Result<(), Failure> {
    let path = format!("/v1/connections/{}/kick", args.id);
    let reply = AdminClient::new(cli)?.post(&path, None)?;
    print_object(cli, &reply, |reply| {
        let conn = &reply["kicked"];
        format!(
            "kicked connection {} ({}, client {})",
            args.id,
            conn["peer"].as_str().unwrap_or("-"),
            conn["client"]
                .as_str()
                .filter(|c| !c.is_empty())
                .unwrap_or("-")
        )
    })
}

pub(crate) fn delete(cli: &Cli, args: &DeleteArgs) -> Result<(), Failure> {
    if let Some(offset) = args.offset {
        return delete_comment(cli, args, offset);
    }
    let client = AdminClient::new(cli)?;
    if !args.yes && !confirm_delete(args)? {
        return Err(Failure::new(
            Status::Usage,
            format!("topic {} was not deleted", args.topic),
        ));
    }
    let path = format!("/v1/topics/{}", path_segment(args.topic.as_str()));
    let reply = client.delete(&path)?;
    print_object(cli, &reply, |reply| {
        format!(
            "deleted topic {} (stream {}, end offset {}, {} bytes); subscriptions ended: {}",
            args.topic,
            field(&reply["stream"]),
            field(&reply["end"]),
            field(&reply["bytes_freed"]),
            field(&reply["subscriptions_ended"])
        )
    })
}

pub(crate) fn tree(cli: &Cli) -> Result<(), Failure> {
    let tree = AdminClient::new(cli)?.get("/v1/tree")?;
    print_object(cli, &tree, tables::tree)
}

pub(crate) fn reload(cli: &Cli) -> Result<(), Failure> {
    let reply = AdminClient::new(cli)?.post("/v1/reload", None)?;
    print_object(cli, &reply, tables::reload)
}

/// Deletes one comment: the broker appends a tombstone for it.
fn delete_comment(cli: &Cli, args: &DeleteArgs, offset: u64) -> Result<(), Failure> {
    let path = format!(
        "/v1/topics/{}/comments/{offset}",
        path_segment(args.topic.as_str())
    );
    let reply = AdminClient::new(cli)?.delete(&path)?;
    print_object(cli, &reply, |reply| {
        if reply["already_deleted"] == true {
            return format!("comment {offset} of {} was already deleted", args.topic);
        }
        format!(
            "deleted comment {offset} of {} (tombstone at offset {})",
            args.topic,
            field(&reply["tombstone"])
        )
    })
}

pub(crate) fn ban(cli: &Cli, args: &BanArgs) -> Result<(), Failure> {
    let mut path = format!("/v1/bans?user={}", path_segment(&args.user));
    if let Some(reason) = &args.reason {
        path.push_str(&format!("&reason={}", path_segment(reason)));
    }
    if let (Some(topic), Some(seconds)) = (&args.purge, args.purge_seconds) {
        path.push_str(&format!(
            "&purge_topic={}&purge_s={seconds}",
            path_segment(topic.as_str())
        ));
    }
    let reply = AdminClient::new(cli)?.post(&path, None)?;
    print_object(cli, &reply, |reply| {
        let mut text = if reply["already_banned"] == true {
            format!("{} was already banned", args.user)
        } else {
            format!("banned {}", args.user)
        };
        if let Some(topic) = &args.purge {
            text.push_str(&format!(
                "; deleted {} of their comments in {topic}",
                field(&reply["purged"])
            ));
        }
        text
    })
}

pub(crate) fn unban(cli: &Cli, args: &UnbanArgs) -> Result<(), Failure> {
    let path = format!("/v1/bans/{}", path_segment(&args.user));
    let reply = AdminClient::new(cli)?.delete(&path)?;
    print_object(cli, &reply, |_| format!("lifted the ban on {}", args.user))
}

pub(crate) fn retention(cli: &Cli, args: &RetentionArgs) -> Result<(), Failure> {
    let client = AdminClient::new(cli)?;
    let path = format!("/v1/topics/{}/retention", path_segment(args.topic.as_str()));
    let reply = if args.reset {
        client.delete(&path)?
    } else {
        client.put(&retention_query(&path, args), None)?
    };
    print_object(cli, &reply, |reply| {
        format!(
            "retention of {}: {}",
            args.topic,
            tables::retention_in_force(&reply["retention"])
        )
    })
}

/// Adds the limits to change to the retention path as query parameters.
fn retention_query(path: &str, args: &RetentionArgs) -> String {
    let mut params = Vec::new();
    if let Some(age) = args.max_age {
        params.push(format!("max_age_ms={}", age.query_value()));
    }
    if let Some(size) = args.max_bytes {
        params.push(format!("max_bytes={}", size.query_value()));
    }
    format!("{path}?{}", params.join("&"))
}

/// Asks on the terminal whether to delete, and fails when standard input is not a terminal.
fn confirm_delete(args: &DeleteArgs) -> Result<bool, Failure> {
    if !io::stdin().is_terminal() {
        let message = format!(
            "not deleting topic {} without confirmation: standard input is not a terminal, so \
             pass --yes",
            args.topic
        );
        return Err(Failure::new(Status::Usage, message));
    }
    eprint!(
        "Delete topic {} and all its comments? Its subscribers receive an error. [y/N] ",
        args.topic
    );
    let _ = io::stderr().flush();
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::local_io("reading standard input", e))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Returns the array under `key` of a list response.
fn list(reply: &Value, key: &str) -> Result<Vec<Value>, Failure> {
    reply[key].as_array().cloned().ok_or_else(|| {
        let message = format!("the admin endpoint sent no \"{key}\" list");
        Failure::new(Status::Broken, message)
    })
}

/// Prints an object as one line of JSON, or as text.
fn print_object(cli: &Cli, value: &Value, text: impl Fn(&Value) -> String) -> Result<(), Failure> {
    if cli.json {
        emit(&value.to_string())
    } else {
        emit(&text(value))
    }
}

/// Prints a list as one line of JSON per item, or as a table.
fn print_list(cli: &Cli, items: &[Value], table: fn(&[Value]) -> String) -> Result<(), Failure> {
    if cli.json {
        for item in items {
            emit(&item.to_string())?;
        }
        return Ok(());
    }
    emit(&table(items))
}

/// Tells on standard error when a connection list is cut short or incomplete.
fn print_list_notes(reply: &Value, shown: usize) {
    let total = reply["total"].as_u64().unwrap_or(shown as u64);
    if total > shown as u64 {
        eprintln!("chorusctl: showing {shown} of {total} connections; raise --limit to see more");
    }
    let unanswered = reply["unanswered_workers"].as_u64().unwrap_or(0);
    if unanswered > 0 {
        eprintln!(
            "chorusctl: {unanswered} broker workers did not answer in time, so the list is \
             incomplete"
        );
    }
}

fn field(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}
