"""The ``sluice`` command: submit, watch, chat, status, cancel, delete (see ``cli.watch`` for exit codes)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from cli.client import ClientError, SluiceClient
from cli.render import JsonView, LiveView, PlainView, summary
from cli.watch import EXIT_FAILURE, EXIT_INTERRUPTED, follow

DEFAULT_URL = "http://127.0.0.1:8000"
F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    """``--url``, ``--api-key`` and ``--json``, on every command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print raw JSON (events as JSON lines).")(
        func
    )
    func = click.option(
        "--api-key",
        envvar="SLUICE_API_KEY",
        default=None,
        help="API key, sent as x-api-key and Authorization: Bearer [env SLUICE_API_KEY].",
    )(func)
    func = click.option(
        "--url",
        envvar="SLUICE_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the API [env SLUICE_URL].",
    )(func)
    return func


def body_options(func: F) -> F:
    """The request fields that ``submit`` and ``chat`` take."""
    options = [
        click.option("--model", default="default", show_default=True, help="Model id or alias."),
        click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate."),
        click.option("--priority", type=int, help="Lower is served sooner."),
        click.option("--system", help="System prompt."),
        click.option("--seed", type=int, help="Same seed, same output."),
        click.option("--temperature", type=click.FloatRange(0, 1), help="Sampling temperature."),
        click.option("--message-id", help="Your own id for the message."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def reports_errors(func: F) -> F:
    """Turn ``ClientError`` into one line on stderr and exit code 1; Ctrl-C into 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"sluice: error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo(
                "\nsluice: stopped watching; the generation goes on (sluice cancel ID stops it)", err=True
            )
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def chat_body(prompt: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A ChatBody with one user turn; ``-`` reads the prompt from stdin. Unset options are left out."""
    if prompt == "-":
        prompt = sys.stdin.read()
    names = ("model", "max_tokens", "priority", "system", "seed", "temperature")
    body: dict[str, Any] = {"model": fields["model"], "messages": [{"role": "user", "content": prompt}]}
    body.update({name: fields[name] for name in names if fields.get(name) is not None})
    return body


def answer_out(answer: dict[str, Any], as_json: bool, line: str) -> None:
    """The API's answer as JSON for scripts, or ``line`` for people."""
    click.echo(json.dumps(answer, ensure_ascii=False) if as_json else line)


def watch_stream(client: SluiceClient, message_id: str, as_json: bool, after: str | None) -> int:
    """Follow ``message_id`` to its end with the renderer that suits stdout; the exit code."""
    console = Console()
    view: JsonView | LiveView | PlainView
    if as_json:
        view = JsonView()
    elif console.is_terminal:
        view = LiveView(console)
    else:
        view = PlainView()
    with view:
        outcome = follow(client, message_id, view, after=after)
    if not as_json:
        try:
            status: dict[str, Any] | None = client.status(message_id)
        except ClientError:
            status = None
        Console(stderr=True).print(
            summary(message_id, outcome, status, view.stats), highlight=False, soft_wrap=True
        )
    return outcome.exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice")
def main() -> None:
    """Sluice from the terminal: submit chats, watch their streams live, manage them."""


@main.command()
@click.argument("prompt")
@body_options
@connection_options
@reports_errors
def submit(
    prompt: str, url: str, api_key: str | None, as_json: bool, message_id: str | None, **fields: Any
) -> None:
    """Start a background generation for PROMPT (- reads stdin) and print its id."""
    with SluiceClient(url, api_key) as client:
        answer = client.submit(chat_body(prompt, fields), message_id)
    answer_out(answer, as_json, answer["message_id"])


@main.command()
@click.argument("message_id")
@click.option("--after", help="Start strictly after this event id instead of replaying from the first.")
@connection_options
@reports_errors
def watch(message_id: str, after: str | None, url: str, api_key: str | None, as_json: bool) -> None:
    """Render MESSAGE_ID's stream live until it ends; resumes by itself if the connection drops."""
    with SluiceClient(url, api_key) as client:
        sys.exit(watch_stream(client, message_id, as_json, after))


@main.command()
@click.argument("prompt")
@body_options
@connection_options
@reports_errors
def chat(
    prompt: str, url: str, api_key: str | None, as_json: bool, message_id: str | None, **fields: Any
) -> None:
    """Submit PROMPT and watch its answer stream in (submit + watch)."""
    with SluiceClient(url, api_key) as client:
        answer = client.submit(chat_body(prompt, fields), message_id)
        if not as_json:
            Console(stderr=True).print(f"[dim]{answer['message_id']}[/dim]", highlight=False)
        sys.exit(watch_stream(client, answer["message_id"], as_json, None))


@main.command()
@click.argument("message_id")
@connection_options
@reports_errors
def status(message_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show MESSAGE_ID's status and metadata."""
    with SluiceClient(url, api_key) as client:
        answer = client.status(message_id)
    if as_json:
        answer_out(answer, as_json, "")
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in answer.items():
        if key != "metadata" and value is not None:
            table.add_row(key, str(value))
    for key, value in (answer.get("metadata") or {}).items():
        if value is not None:
            table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    Console().print(table, highlight=False)


@main.command()
@click.argument("message_id")
@connection_options
@reports_errors
def cancel(message_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Cancel MESSAGE_ID (a message that already ended stays as it is)."""
    with SluiceClient(url, api_key) as client:
        answer = client.cancel(message_id)
    answer_out(answer, as_json, f"{message_id}: {answer['status']}")


@main.command()
@click.argument("message_id")
@connection_options
@reports_errors
def delete(message_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Delete MESSAGE_ID: stop it if running, remove its status and events."""
    with SluiceClient(url, api_key) as client:
        answer = client.delete(message_id)
    answer_out(answer, as_json, f"{message_id}: deleted")


@main.group()
def batch() -> None:
    """Message Batches: submit a JSONL file of requests, follow it, read its results."""


def batch_requests(lines: list[str]) -> list[dict[str, Any]]:
    """Requests from JSONL lines: ``{custom_id, params}`` as is, or a bare ChatBody (``custom_id`` =
    ``line-<n>``); blank lines are skipped."""
    requests: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise click.BadParameter(f"line {number} is not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise click.BadParameter(f"line {number} is not a JSON object")
        requests.append(item if "params" in item else {"custom_id": f"line-{number}", "params": item})
    return requests


def batch_line(answer: dict[str, Any]) -> str:
    """One line for people: id, state and the counts that are not zero."""
    counts = ", ".join(f"{k} {v}" for k, v in answer["request_counts"].items() if v)
    return f"{answer['id']}: {answer['processing_status']} ({counts or 'empty'})"


@batch.command("submit")
@click.argument("path", type=click.File("r"))
@connection_options
@reports_errors
def batch_submit(path: Any, url: str, api_key: str | None, as_json: bool) -> None:
    """Create a batch from PATH (JSONL, - reads stdin) and print its id."""
    requests = batch_requests(path.read().splitlines())
    with SluiceClient(url, api_key, timeout=300) as client:
        answer = client.batch_create(requests)
    answer_out(answer, as_json, answer["id"])


@batch.command("status")
@click.argument("batch_id")
@connection_options
@reports_errors
def batch_status(batch_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Show BATCH_ID's processing status and request counts."""
    with SluiceClient(url, api_key) as client:
        answer = client.batch(batch_id)
    answer_out(answer, as_json, batch_line(answer))


@batch.command("results")
@click.argument("batch_id")
@connection_options
@reports_errors
def batch_results(batch_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Print BATCH_ID's results as JSONL, one line per request (once it has ended)."""
    with SluiceClient(url, api_key) as client:
        for line in client.batch_results(batch_id):
            click.echo(line)


@batch.command("cancel")
@click.argument("batch_id")
@connection_options
@reports_errors
def batch_cancel(batch_id: str, url: str, api_key: str | None, as_json: bool) -> None:
    """Cancel BATCH_ID: what has not run never will."""
    with SluiceClient(url, api_key) as client:
        answer = client.batch_cancel(batch_id)
    answer_out(answer, as_json, batch_line(answer))
