"""Delivery: the nightly briefing mailed to a real SMTP server on 127.0.0.1 (aiosmtpd), checked
by what the server received; a failed send recorded on the run, reported in one line, never resent
unasked; `minutes send --run ID`; the [delivery] settings."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import socket
import subprocess

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from typer.testing import CliRunner

from pipeline import store
from pipeline.cli import app

from .conftest import SAMPLES

runner = CliRunner()
RECIPIENTS = ["director@northmoor.example.gov.uk", "deputy@northmoor.example.gov.uk"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler that keeps what it was given."""

    def __init__(self):
        self.envelopes = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        # handled=False: aiosmtpd answers 235 or 535 itself.
        return AuthResult(success=auth_data.password == b"s3cret-from-env", handled=False)

    def messages(self):
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


@pytest.fixture()
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=inbox.authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def delivery_config(tmp_path, port: int, extra: str = "", security: str = "none"):
    path = tmp_path / "minutes.toml"
    to = ", ".join(json.dumps(r) for r in RECIPIENTS)
    path.write_text(f'[delivery]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "{security}"\n'
                    f'from = "minutes@northmoor.example.gov.uk"\nto = [{to}]\ntimeout_s = 5\n{extra}',
                    encoding="utf-8")
    return path


@pytest.fixture()
def hostile_source(tmp_path):
    """An item whose title and text hold markup, beside the samples."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "fernley-scrutiny.html").write_text(
        "<html><body><div id='modgov'><h1>Agenda item</h1>"
        "<h2>&lt;script&gt;alert('x')&lt;/script&gt; Ofsted inspection of children's services</h2>"
        "<p>Minutes:</p><p>Ofsted judged Fernley's children's services inadequate in March 2025 and "
        "caseloads were 30 per social worker &lt;img src=x onerror=alert(1)&gt;.</p>"
        "</div></body></html>", encoding="utf-8")
    return folder


def nightly(env, config, *sources):
    args = ["nightly", "--config", str(config), "--json"]
    for source in sources:
        args += ["--source", str(source)]
    return runner.invoke(app, args, env=env)


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_nightly_mails_the_briefing_once_with_both_parts_and_attachments(
        model_env, tmp_path, smtp_server, hostile_source):
    port, inbox = smtp_server
    config = delivery_config(tmp_path, port)
    result = nightly(model_env, config, SAMPLES, hostile_source)
    assert result.exit_code == 0, result.output
    summary = last_json(result)
    delivery = summary["delivery"]
    assert delivery["status"] == "sent" and delivery["reason"] is None
    assert delivery["recipients"] == RECIPIENTS and delivery["attempted_at"]

    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "minutes@northmoor.example.gov.uk"
    assert envelope.rcpt_tos == RECIPIENTS
    message = inbox.messages()[0]
    briefing = json.loads((tmp_path / "briefings" / "briefing.json").read_text())
    assert briefing["flagged"] >= 1
    run_day = store.runs(store.connect(model_env["MINUTES_DB"]), 1)[0]["started_at"][:10]
    counts = briefing["counts"]
    assert message["Subject"] == (
        f"Children's services briefing {run_day}: intervention notices {counts['intervention_notice']}, "
        f"inspection outcomes {counts['inspection_outcome']}, workforce concerns {counts['workforce_concern']}")
    assert message["From"] == "minutes@northmoor.example.gov.uk"
    assert [str(a.addr_spec) for a in message["To"].addresses] == RECIPIENTS
    assert message["Message-ID"] and message["Date"]

    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    html = message.get_body(("html",)).get_content()
    text = body.get_content()
    assert message.get_body(("html", "plain")).get_content_type() == "text/html"
    # Markup from minutes is text in the HTML part, and plain in the text part.
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert('x')</script> Ofsted inspection of children's services" in text
    for group in briefing["groups"]:
        for entry in group["items"]:
            assert entry["title"] in text and (entry["briefing"] or "") in text
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(attachments) == {f"briefing-{run_day}.md", f"briefing-{run_day}.json"}
    assert attachments[f"briefing-{run_day}.md"].get_content_type() == "text/markdown"
    # Text travels with CRLF line ends (RFC 5322); the words are the file's.
    assert attachments[f"briefing-{run_day}.md"].get_content().replace("\r\n", "\n") == \
        (tmp_path / "briefings" / "briefing.md").read_text()
    attached = attachments[f"briefing-{run_day}.json"].get_content()
    assert json.loads(attached) == briefing

    # The run record holds the outcome.
    runs = json.loads(runner.invoke(app, ["runs", "--json"], env=model_env).stdout)
    assert runs[0]["delivery"]["status"] == "sent" and runs[0]["delivery"]["recipients"] == RECIPIENTS

    # Nothing new: no mail, and the old briefing is not sent again.
    again = nightly(model_env, config, SAMPLES, hostile_source)
    assert again.exit_code == 0, again.output
    assert last_json(again)["delivery"]["status"] == "skipped"
    assert len(inbox.envelopes) == 1

    # Asked for: sent again, rebuilt from the items run 1 briefed, and recorded.
    resent = runner.invoke(app, ["send", "--run", str(summary["run_id"]), "--config", str(config)],
                           env=model_env)
    assert resent.exit_code == 0, resent.output
    assert len(inbox.envelopes) == 2
    again_message = inbox.messages()[1]
    assert again_message["Subject"] == message["Subject"]
    rebuilt = json.loads(next(p for p in again_message.iter_attachments()
                              if p.get_filename().endswith(".json")).get_content())
    assert rebuilt["flagged"] == briefing["flagged"] and rebuilt["items_read"] == briefing["items_read"]
    db = store.connect(model_env["MINUTES_DB"])
    assert [d["status"] for d in store.deliveries_of(db, summary["run_id"])] == ["sent", "sent"]


def test_a_failed_send_is_one_line_recorded_and_not_resent_unasked(model_env, tmp_path):
    port = free_port()  # nothing listens there
    config = delivery_config(tmp_path, port)
    result = nightly(model_env, config, SAMPLES)
    assert result.exit_code == 69, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("delivery failed: 127.0.0.1:")
    assert "minutes send --run 1" in lines[0]
    summary = last_json(result)
    assert summary["delivery"]["status"] == "failed" and "127.0.0.1" in summary["delivery"]["reason"]
    # The run's results are stored and its briefing written.
    db = store.connect(model_env["MINUTES_DB"])
    run = store.runs(db, 1)[0]
    assert run["status"] == "ok" and run["counts"]["items_classified"] == 28
    assert run["delivery"]["status"] == "failed"
    assert (tmp_path / "briefings" / "briefing.html").is_file()

    # The next run has nothing new and does not try the old briefing again.
    again = nightly(model_env, config, SAMPLES)
    assert again.exit_code == 0, again.output
    assert last_json(again)["delivery"]["status"] == "skipped"
    assert len(store.deliveries_of(db, summary["run_id"])) == 1


def test_send_refuses_in_one_line_without_delivery_an_unknown_run_or_no_briefing(model_env, tmp_path):
    config = delivery_config(tmp_path, free_port())
    no_delivery = tmp_path / "plain.toml"
    no_delivery.write_text('recipients_title = "Director"\n')
    first = nightly(model_env, no_delivery, SAMPLES)
    assert first.exit_code == 0 and last_json(first)["delivery"] is None
    second = nightly(model_env, no_delivery, SAMPLES)  # nothing new: keeps run 1's briefing
    assert second.exit_code == 0
    for args, words in [
        (["send", "--run", "1", "--config", str(no_delivery)], "delivery is not configured"),
        (["send", "--run", "9", "--config", str(config)], "no run 9"),
        (["send", "--run", "2", "--config", str(config)], "run 2 (ok) wrote no briefing of its own; run 1"),
    ]:
        result = runner.invoke(app, args, env=model_env)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().count("\n") == 0 and words in result.stderr, result.stderr


def test_starttls_is_required_when_asked_and_a_login_uses_the_password_from_the_environment(
        model_env, tmp_path, smtp_server):
    port, inbox = smtp_server
    # A server that offers no STARTTLS: nothing is sent in clear.
    config = delivery_config(tmp_path, port, 'user = "minutes"\npassword_env = "NORTHMOOR_SMTP_PASSWORD"\n',
                             security="starttls")
    result = nightly({**model_env, "NORTHMOOR_SMTP_PASSWORD": "s3cret-from-env"}, config, SAMPLES)
    assert result.exit_code == 69
    assert "STARTTLS" in last_json(result)["delivery"]["reason"]
    assert inbox.envelopes == [] and inbox.logins == []

    plain = delivery_config(tmp_path, port, 'user = "minutes"\npassword_env = "NORTHMOOR_SMTP_PASSWORD"\n')
    missing = runner.invoke(app, ["send", "--run", "1", "--config", str(plain)], env=model_env)
    assert missing.exit_code == 69
    assert "NORTHMOOR_SMTP_PASSWORD, which is not set" in missing.stderr and inbox.logins == []
    wrong = runner.invoke(app, ["send", "--run", "1", "--config", str(plain)],
                          env={**model_env, "NORTHMOOR_SMTP_PASSWORD": "guess"})
    assert wrong.exit_code == 69 and "535" in wrong.stderr and inbox.envelopes == []
    sent = runner.invoke(app, ["send", "--run", "1", "--config", str(plain)],
                         env={**model_env, "NORTHMOOR_SMTP_PASSWORD": "s3cret-from-env"})
    assert sent.exit_code == 0, sent.output
    assert inbox.logins[-1] == ("minutes", "s3cret-from-env") and len(inbox.envelopes) == 1
    db = store.connect(model_env["MINUTES_DB"])
    assert [d["status"] for d in store.deliveries_of(db, 1)] == ["failed", "failed", "failed", "sent"]


def test_tls_refuses_a_certificate_it_cannot_verify(model_env, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), ssl_context=context)
    controller.start()
    try:
        config = delivery_config(tmp_path, controller.port, security="tls")
        result = nightly(model_env, config, SAMPLES)
    finally:
        controller.stop()
    assert result.exit_code == 69
    assert "CERTIFICATE_VERIFY_FAILED" in last_json(result)["delivery"]["reason"]
    assert inbox.envelopes == []


@pytest.mark.parametrize("table, words", [
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\npassword = "hunter2"', "never kept in the config file"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\nsecurity = "ssl"', "delivery.security"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = []', "delivery.to"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk\\nBcc: e@f.uk"]', "delivery.to"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\nport = 70000', "delivery.port"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\nuser = "me"', "user and password_env go together"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\npassword_env = "my password"', "delivery.password_env"),
    ('host = "mail"\nto = ["c@d.uk"]', "needs 'from'"),
    ('host = "mail"\nfrom = "a@b.uk"\nto = ["c@d.uk"]\ncc = ["x@y.uk"]', "unknown key(s) in [delivery]: cc"),
])
def test_a_wrong_delivery_setting_is_one_line_naming_it(env, tmp_path, table, words):
    config = tmp_path / "minutes.toml"
    config.write_text(f"[delivery]\n{table}\n", encoding="utf-8")
    result = runner.invoke(app, ["items", "--config", str(config)], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and words in result.stderr, result.stderr
    assert "hunter2" not in result.stderr


def test_delivery_settings_are_typed_with_port_defaults(tmp_path):
    from pipeline.config import Delivery, load_settings

    config = tmp_path / "minutes.toml"
    config.write_text('[delivery]\nhost = "smtp.example.gov.uk"\nfrom = "a@b.uk"\nto = "c@d.uk"\n'
                      'security = "tls"\nuser = "me"\npassword_env = "SMTP_PASSWORD"\n')
    delivery = load_settings(config, env={}).delivery
    assert delivery == Delivery(host="smtp.example.gov.uk", sender="a@b.uk", to=["c@d.uk"], security="tls",
                                user="me", password_env="SMTP_PASSWORD")
    assert delivery.port_in_use == 465
    assert load_settings(None, env={}).delivery is None
