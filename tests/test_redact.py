"""Redaction: secrets by default, personal data on request, every pattern in linear time."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rhizome.redact import ASSIGNMENT_PATTERN, PII_PATTERNS, SECRET_PATTERNS, Redaction, redact_pii, redact_secrets

ROOT = Path(__file__).resolve().parents[1]

FAKE_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234abcd\nZmFrZWtleWRhdGE=\n"
               "-----END RSA PRIVATE KEY-----")
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented sample secret


# Secrets.
@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("key sk-proj-abcDEF123ghiJKL456mnoPQR789stu_vwx-YZ0 ok", "key [REDACTED:openai_key] ok", "openai_key"),
    ("sk-abcdefghij1234567890ABCDEFGHIJ1234567890abcdefgh", "[REDACTED:openai_key]", "openai_key"),
    ("ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-AB",
     "ANTHROPIC_API_KEY=[REDACTED:anthropic_key]", "anthropic_key"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "aws [REDACTED:aws_access_key] here", "aws_access_key"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:github_token]", "github_token"),
    ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:github_token]", "github_token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[REDACTED:github_token]", "github_token"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", "[REDACTED:slack_token]", "slack_token"),
    ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe;", "key=[REDACTED:google_api_key];", "google_api_key"),
    ("sk_live_abcdefghijklmnopqrstuvwx", "[REDACTED:stripe_key]", "stripe_key"),
    ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "HF_TOKEN=[REDACTED:huggingface_token]", "huggingface_token"),
    (f"token {FAKE_JWT}", "token [REDACTED:jwt]", "jwt"),
    ("-H 'Authorization: Bearer abcDEF123456ghiJKL789'", "-H 'Authorization: Bearer [REDACTED:bearer_token]'",
     "bearer_token"),
    (f"my key:\n{PRIVATE_KEY}\nthanks", "my key:\n[REDACTED:private_key]\nthanks", "private_key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA\n\nWhat is wrong with it?",
     "[REDACTED:private_key]\nWhat is wrong with it?", "private_key"),  # truncated: ends where the key data does
    ("postgres://alice:s3cr3tP4ss@db.example.com:5432/app",
     "postgres://alice:[REDACTED:url_password]@db.example.com:5432/app", "url_password"),
    ('password = "hunter2"', 'password = "[REDACTED:secret_assignment]"', "secret_assignment"),
    ("DB_PASSWORD=Tr0ub4dor&3", "DB_PASSWORD=[REDACTED:secret_assignment]", "secret_assignment"),
    ('{"client_secret": "Zx9-qq-77"}', '{"client_secret": "[REDACTED:secret_assignment]"}', "secret_assignment"),
    ("api_key: abc123def456", "api_key: [REDACTED:secret_assignment]", "secret_assignment"),
    ("x-api-key: 0123abcd4567efgh", "x-api-key: [REDACTED:secret_assignment]", "secret_assignment"),
    ("DB_PWD='Where2Go!'", "DB_PWD='[REDACTED:secret_assignment]'", "secret_assignment"),
    # Misses of the first version.
    (f"AWS Secret Access Key [None]: {AWS_SECRET}\nDefault region name [None]: eu-west-1",
     "AWS Secret Access Key [None]: [REDACTED:secret_assignment]\nDefault region name [None]: eu-west-1",
     "secret_assignment"),  # the `aws configure` prompt
    (f"Hi, my secret key is {AWS_SECRET}. Why does it fail?",
     "Hi, my secret key is [REDACTED:secret_assignment]. Why does it fail?", "secret_assignment"),
    ("the api key was 9f8e7d6c5b4a, is that right?", "the api key was [REDACTED:secret_assignment], is that right?",
     "secret_assignment"),
    ("-----BEGIN RSA PRIVATE KEY----- MIIEpAIBAAKCAQEA1234abcd ZmFrZWtleWRhdGE=", "[REDACTED:private_key]",
     "private_key"),  # one line, the line ends turned into spaces, no END
    ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0B\\n'
     'ZmFrZQ==\\n-----END PRIVATE KEY-----\\n"}',
     '{"type": "service_account", "private_key": "[REDACTED:private_key]\\n"}', "private_key"),
    ('password = "correct horse battery staple"', 'password = "[REDACTED:secret_assignment]"', "secret_assignment"),
    ("export DB_PASSWORD=correct horse battery staple", "export DB_PASSWORD=[REDACTED:secret_assignment]",
     "secret_assignment"),
    ('{"password": "MyExampleCorp2024"}', '{"password": "[REDACTED:secret_assignment]"}', "secret_assignment"),
])
def test_each_secret_kind_is_redacted_and_counted(text, expected, kind):
    counts = Counter()
    assert redact_secrets(text, counts) == expected
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", [
    "The commit 3f9a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c fixed it; see also abc1234.",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "Its id is 123e4567-e89b-12d3-a456-426614174000.",
    "The secret to good bread is time. My password manager is great. Keys: none. Tokens: 1024.",
    "The password is too short and the secret key is stored in ~/.aws/credentials.",
    "pip install scikit-learn; see the sk-learn-compatible-estimators page",
    'api_key = os.environ["OPENAI_API_KEY"]\npassword = getpass.getpass()\nsecret = os.getenv("SECRET")',
    'tokenizer = "bert-base-uncased"; pad_token = "[PAD]"; eos_token="</s>"; max_tokens=100000',
    "def connect(password: str, api_key: str | None = None) -> None:",
    'api_key = "YOUR_API_KEY"; password = "<password>"; token = "${TOKEN}"; secret="xxxxxxxx"; pwd="example"',
    "postgres://user:password@localhost/db and https://example.com:8080/path@v2",
    "Ghosts, hf_hub_download and AKIA are fine words; the Bearer of this letter.",
    # An env dump: the working folders are paths, not passwords.
    "PWD=/home/alice/projects/web2\nOLDPWD=/home/alice/src/app3\nSHELL=/bin/bash\nHOME=/home/alice",
    "token_path: ~/.config/hub/token2",
])
def test_prose_identifiers_paths_and_placeholders_are_not_redacted(text):
    counts = Counter()
    assert redact_secrets(text, counts) == text
    assert not counts


def test_a_full_aws_configure_transcript_keeps_nothing_secret():
    transcript = ("$ aws configure\nAWS Access Key ID [None]: AKIAIOSFODNN7EXAMPLE\n"
                  f"AWS Secret Access Key [None]: {AWS_SECRET}\nDefault region name [None]: us-west-2\n"
                  "Default output format [None]: json")
    counts = Counter()
    redacted = redact_secrets(transcript, counts)
    assert "AKIAIOSFODNN7EXAMPLE" not in redacted and AWS_SECRET not in redacted
    assert "us-west-2" in redacted and counts == Counter({"aws_access_key": 1, "secret_assignment": 1})


def test_a_key_in_an_assignment_counts_once_by_its_kind():
    counts = Counter()
    assert redact_secrets('OPENAI_API_KEY="sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA1"', counts) == \
        'OPENAI_API_KEY="[REDACTED:openai_key]"'
    assert counts == Counter({"openai_key": 1})


def test_uppercase_keywords_and_unicode_that_changes_length_when_lowered():
    counts = Counter()
    assert redact_secrets("İstanbul PASSWORD: Hunter22", counts) == "İstanbul PASSWORD: [REDACTED:secret_assignment]"
    assert counts["secret_assignment"] == 1


# Personal data.
@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("write to alice.smith+bees@mail.example.co.uk.", "write to [REDACTED:email].", "email"),
    ("<Bob.O'Neil@uni-hamburg.de>", "<Bob.O'[REDACTED:email]>", "email"),
    ("call +44 20 7946 0958 today", "call [REDACTED:phone] today", "phone"),
    ("+1 (555) 123-4567", "[REDACTED:phone]", "phone"),
    ("+49 (0)30 1234567", "[REDACTED:phone]", "phone"),
    ("WhatsApp: +4915112345678", "WhatsApp: [REDACTED:phone]", "phone"),
    ("office (555) 123-4567, ext 2", "office [REDACTED:phone], ext 2", "phone"),
    ("555-123-4567", "[REDACTED:phone]", "phone"),
    ("555.123.4567", "[REDACTED:phone]", "phone"),
    ("London 020 7946 0958", "London [REDACTED:phone]", "phone"),
    ("mobile 06 12 34 56 78", "mobile [REDACTED:phone]", "phone"),
    ("(030) 1234 5678", "[REDACTED:phone]", "phone"),
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [REDACTED:iban], thanks", "iban"),
    ("GB82WEST12345698765432", "[REDACTED:iban]", "iban"),
    ("FR14 2004 1010 0505 0001 3M02 606", "[REDACTED:iban]", "iban"),
    ("card 4111 1111 1111 1111 exp 12/27", "card [REDACTED:card_number] exp 12/27", "card_number"),
    ("5555-5555-5555-4444", "[REDACTED:card_number]", "card_number"),
    ("amex 378282246310005.", "amex [REDACTED:card_number].", "card_number"),
])
def test_each_kind_of_personal_data_is_redacted_and_counted(text, expected, kind):
    counts = Counter()
    assert redact_pii(text, counts) == expected
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", [
    "git clone git@github.com:alice/hive.git; the @decorator; icon@2x.png; npm i left-pad@1.3.0; user@localhost",
    "On 2024-01-15 at 10:30:45, and 15.01.2024, 01/02/2024, 01-02-2024, 2024-01-15T10:30:00+01:00.",
    "Version 1.2.3, v10.15.7, 3.11.7-1ubuntu2, build 20240115.1, Python 3.10",
    "Hosts 192.168.1.100 and 10.0.0.1:8080; port 5432; 255.255.255.0",
    "Unix time 1700000000, in ms 1700000000000; ids 1234567890123456 and 98765432101; sums 100 200 3000",
    "ISBN 978-3-16-148410-0; order 4111 1111 1111 1112 (fails the Luhn check)",
    "IBAN DE89 3704 0044 0532 0130 08 fails the mod-97 check",
    "x = 3.14159265358979; 2 + 2 = 4; 1e-12; -123456789; 50% of 1,000,000",
])
def test_numbers_that_are_not_personal_data_are_left_alone(text):
    counts = Counter()
    assert redact_pii(text, counts) == text
    assert not counts


def test_redaction_settings():
    text = "key sk-proj-abcDEF123ghiJKL456mnoPQR789 from alice@example.org"
    counts = Counter()
    assert Redaction()(text, counts) == "key [REDACTED:openai_key] from alice@example.org"  # personal data: opt-in
    assert Redaction(pii=True)(text, counts) == "key [REDACTED:openai_key] from [REDACTED:email]"
    assert Redaction(secrets=False, pii=True)(text) == "key sk-proj-abcDEF123ghiJKL456mnoPQR789 from [REDACTED:email]"
    assert Redaction(secrets=False)(text) == text and not Redaction(secrets=False)
    assert counts == Counter({"openai_key": 2, "email": 1})
    # The settings a stage saved; a memory saved before redaction existed gets the default.
    assert Redaction.of({"redact": False, "redact_pii": True}) == Redaction(secrets=False, pii=True)
    assert Redaction.of({"embedding_model": "x"}) == Redaction()


# Every pattern in linear time.
BOUND_S = 5.0  # CPU seconds, so other processes cannot make it flake: ~1 s; one quadratic pattern takes minutes
MB = 1 << 20
EXAMPLES = {  # one match of each pattern, whose prefixes repeated make it backtrack
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234abcd\n",
    "anthropic_key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
    "openai_key": "sk-proj-abcDEF123ghiJKL456mnoPQR789stu",
    "stripe_key": "sk_live_abcdefghijklmnopqrstuvwx",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "slack_token": "https://hooks.slack.com/services/T0000/B0000/XXXX xoxb-123456789012-abc",
    "google_api_key": "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
    "huggingface_token": "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "jwt": FAKE_JWT,
    "bearer_token": "Authorization: Bearer abcDEF123456ghiJKL789",
    "url_password": "postgres://alice:s3cr3tP4ss@db.example.com",
    "secret_assignment": f'export DB_PASSWORD="horse 1"\nAWS Secret Access Key [None]: {AWS_SECRET} password=',
    "card_number": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "email": "alice.smith@mail.example.co.uk",
    "phone": "+44 (0)20 7946 0958 (555) 123-4567 020 7946 0958",
}


def adversarial_texts(example: str) -> list[str]:
    """1 MB each: two prefixes of ``example`` repeated, and "a-" repeated (every letter starts a word)."""
    prefixes = [example[:len(example) // 2], example[:-1]]
    return [prefix * (MB // len(prefix)) for prefix in prefixes] + ["a-" * (MB // 2)]


def time_every_pattern() -> dict[str, float]:
    """CPU seconds each pattern takes over its adversarial texts (the assignment ones see lower-cased text)."""
    import time

    seconds: Counter = Counter()
    for pattern in SECRET_PATTERNS + (ASSIGNMENT_PATTERN,) + PII_PATTERNS:
        for text in adversarial_texts(EXAMPLES[pattern.kind]):
            haystack = text.lower() if pattern is ASSIGNMENT_PATTERN else text
            started = time.process_time()
            for _ in pattern.regex.finditer(haystack):
                pass
            seconds[pattern.kind] += time.process_time() - started
    return dict(seconds)


def test_every_pattern_runs_in_linear_time_on_adversarial_text():
    assert set(EXAMPLES) == {p.kind for p in SECRET_PATTERNS + (ASSIGNMENT_PATTERN,) + PII_PATTERNS}
    # In a child process, so that a pattern gone quadratic fails the test at the bound rather than after minutes.
    code = "import json, tests.test_redact as t; print(json.dumps(t.time_every_pattern()))"
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=60)  # wall clock, on a busy machine
    except subprocess.TimeoutExpired:
        pytest.fail(f"the patterns took over a minute on {MB:,}-character adversarial texts")
    seconds = json.loads(done.stdout)
    assert sum(seconds.values()) < BOUND_S, seconds

