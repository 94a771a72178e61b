"""Writes eval/golden/citations.jsonl: hand-labelled answer sentences and the texts of the sources they cite.

    python eval/golden/build_citations.py

Each row's label was written by reading the cited section, not by the checker. A source is one section of a real
file of the repository (from its `## heading` to the next one), the size of a chunk. The split is by document:
`tune` rows cite access-management, expense-policy, instrukcja-vpn and docs/answering.md; `test` rows cite
api-versioning, monitoring-standards and limity-api (held out: never looked at while choosing thresholds).
Labels: supported | unsupported | uncited | no_claim.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ML = "eval/corpora/multilingual/"
FILES = {
    "am": ML + "en/access-management.md", "ex": ML + "en/expense-policy.md", "vpn": ML + "pl/instrukcja-vpn.md",
    "ans": "docs/answering.md", "api": ML + "en/api-versioning.md", "mon": ML + "en/monitoring-standards.md",
    "rl": ML + "ru/limity-api.md",
}
SPLIT = {"am": "tune", "ex": "tune", "vpn": "tune", "ans": "tune", "api": "test", "mon": "test", "rl": "test"}


def section(key: str, heading: str) -> dict:
    text = (ROOT / FILES[key]).read_text(encoding="utf-8")
    m = re.search(r"^#+ " + re.escape(heading) + r"\n(.*?)(?=^#+ |\Z)", text, re.MULTILINE | re.DOTALL)
    if not m:
        raise SystemExit(f"{FILES[key]}: no section {heading!r}")
    return {"path": FILES[key], "heading": heading, "text": m.group(1).strip()}


S = {
    "am.pw": ("am", "Passwords"), "am.mfa": ("am", "Multi-factor authentication"),
    "am.err": ("am", "Common sign-in problems"), "am.rev": ("am", "Access reviews"),
    "am.jml": ("am", "Joiners, movers and leavers"), "am.sso": ("am", "Accounts and single sign-on"),
    "ex.rec": ("ex", "Receipts"), "ex.sub": ("ex", "Submitting a claim"), "ex.app": ("ex", "Approvals"),
    "ex.cc": ("ex", "Cost centres"), "ex.card": ("ex", "Corporate cards"),
    "ex.pay": ("ex", "Reimbursement timeline and leavers"),
    "vpn.req": ("vpn", "Wymagania wstępne"), "vpn.first": ("vpn", "Pierwsze uruchomienie"),
    "vpn.split": ("vpn", "Tunelowanie dzielone"), "vpn.err": ("vpn", "Najczęstsze błędy"),
    "vpn.help": ("vpn", "Gdzie szukać pomocy"),
    "ans.eng": ("ans", "Engines"), "ans.cpu": ("ans", "On CPU, in this repository's CI machine"),
    "api.ver": ("api", "Versions"), "api.brk": ("api", "What counts as a breaking change"),
    "api.dep": ("api", "Deprecation process"), "api.sdk": ("api", "SDKs and documentation"),
    "api.exc": ("api", "Requesting exceptions"),
    "mon.met": ("mon", "Metrics"), "mon.rules": ("mon", "Alert rules"), "mon.noise": ("mon", "Noise budget"),
    "mon.dash": ("mon", "Dashboards"), "mon.syn": ("mon", "Synthetic checks"),
    "rl.gen": ("rl", "Общие правила"), "rl.hdr": ("rl", "Заголовки ответа"), "rl.over": ("rl", "Превышение лимита"),
    "rl.spec": ("rl", "Особые эндпоинты"), "rl.up": ("rl", "Повышение лимитов"),
}

# (language of the sentence, sentence, cited sections in order [1], [2], ..., label, kind)
ROWS = [
    # ---- tune: access management (en)
    ("en", "Passwords must be at least 14 characters long [1].", ["am.pw"], "supported", "exact"),
    ("en", "Passwords must be at least 12 characters long [1].", ["am.pw"], "unsupported", "wrong-number"),
    ("en", "You do not have to rotate your password on a schedule, only when it may have leaked [1].", ["am.pw"], "supported", "paraphrase"),
    ("en", "Passwords must be changed every 90 days [1].", ["am.pw"], "unsupported", "contradiction"),
    ("en", "Administrators must use hardware security keys and receive two of them [1].", ["am.mfa"], "supported", "exact"),
    ("en", "SMS codes are accepted as a second factor for internal systems [1].", ["am.mfa"], "unsupported", "contradiction"),
    ("en", "The error AUTH-E017 means the single sign-on session on the device expired or was revoked [1].", ["am.err"], "supported", "identifier"),
    ("en", "The error AUTH-E071 means the single sign-on session on the device expired or was revoked [1].", ["am.err"], "unsupported", "wrong-identifier"),
    ("en", "The review recorded in ticket SEC-1187 found 23 stale accounts of former contractors [1].", ["am.rev"], "supported", "identifier"),
    ("en", "The review recorded in ticket SEC-1187 found 32 stale accounts of former contractors [1].", ["am.rev"], "unsupported", "wrong-number"),
    ("en", "The review recorded in ticket SEC-1187 found 23 stale accounts of former contractors [2].", ["am.rev", "am.pw"], "unsupported", "wrong-source"),
    ("en", "Group memberships not confirmed within two weeks are removed automatically [1].", ["am.rev"], "supported", "exact"),
    ("en", "Accounts of a departing employee are disabled within four hours after their last working day [1].", ["am.jml"], "supported", "exact"),
    ("en", "The mailbox of a departing employee is kept for 30 days [1].", ["am.jml"], "supported", "exact"),
    ("en", "The mailbox of a departing employee is kept for 90 days [1].", ["am.jml"], "unsupported", "wrong-number"),
    ("en", "The mailbox of a departing employee is kept for 30 days.", [], "uncited", "uncited"),
    ("en", "Shared accounts are allowed for every team that asks for one [1].", ["am.sso"], "unsupported", "contradiction"),
    ("en", "Permissions are given through role-based groups rather than to individual users [1].", ["am.sso"], "supported", "paraphrase"),
    ("en", "Here is what I found in the documents.", [], "no_claim", "no-claim"),
    ("pl", "Hasło musi mieć co najmniej 14 znaków [1].", ["am.pw"], "supported", "cross-language"),
    ("pl", "Hasło musi mieć co najmniej 16 znaków [1].", ["am.pw"], "unsupported", "cross-language-wrong-number"),
    ("pl", "Błąd AUTH-E017 oznacza, że sesja logowania jednokrotnego wygasła [1].", ["am.err"], "supported", "cross-language"),
    ("ru", "Проверка по тикету SEC-1187 выявила 23 устаревшие учётные записи подрядчиков [1].", ["am.rev"], "supported", "cross-language"),
    ("ru", "Почтовый ящик уволившегося сотрудника хранится 60 дней [1].", ["am.jml"], "unsupported", "cross-language-wrong-number"),
    ("pl", "Konta byłego pracownika są wyłączane w ciągu czterech godzin.", [], "uncited", "uncited"),
    # ---- tune: expenses (en)
    ("en", "Every expense above 25 EUR needs an itemised receipt [1].", ["ex.rec"], "supported", "exact"),
    ("en", "Every expense above 50 EUR needs an itemised receipt [1].", ["ex.rec"], "unsupported", "wrong-number"),
    ("en", "A missing-receipt declaration is accepted at most twice per calendar year [1].", ["ex.rec"], "supported", "exact"),
    ("en", "Claims are submitted in Spendwise within 30 days of the expense [1].", ["ex.sub"], "supported", "exact"),
    ("en", "Claims are submitted in Expensify within 30 days of the expense [1].", ["ex.sub"], "unsupported", "wrong-name"),
    ("en", "Claims older than 90 days are rejected automatically and cannot be reopened [1].", ["ex.sub"], "supported", "exact"),
    ("en", "Claims older than 60 days are rejected automatically [1].", ["ex.sub"], "unsupported", "wrong-number"),
    ("en", "Claims above 1000 EUR also need the finance controller's approval [1].", ["ex.app"], "supported", "number-format"),
    ("en", "Claims above 1 000 EUR also need the finance controller's approval [2].", ["ex.rec", "ex.app"], "supported", "number-format"),
    ("en", "Claims above 1,000 EUR also need the finance controller's approval [1].", ["ex.rec", "ex.app"], "unsupported", "wrong-source"),
    ("en", "A manager cannot approve their own claims [1].", ["ex.app"], "supported", "exact"),
    ("en", "Engineering and research costs go to cost centre CC-4410 [1].", ["ex.cc"], "supported", "identifier"),
    ("en", "Engineering and research costs go to cost centre CC-2100 [1].", ["ex.cc"], "unsupported", "wrong-identifier"),
    ("en", "Sales costs are booked to CC-2100.", [], "uncited", "uncited"),
    ("en", "Card transactions must be matched with receipts by the 5th day of the following month [1].", ["ex.card"], "supported", "exact"),
    ("en", "Card transactions must be matched with receipts by the 10th day of the following month [1].", ["ex.card"], "unsupported", "wrong-number"),
    ("en", "Personal purchases on a corporate card are fine if you repay them right away [1].", ["ex.card"], "unsupported", "contradiction"),
    ("en", "Claims approved by the 20th of the month are paid with the next payroll [1].", ["ex.pay"], "supported", "paraphrase"),
    ("en", "Open card transactions of a leaver are deducted from the final salary [1].", ["ex.pay"], "supported", "paraphrase"),
    ("pl", "Wydatki powyżej 25 EUR wymagają szczegółowego paragonu [1].", ["ex.rec"], "supported", "cross-language"),
    ("pl", "Koszty działu inżynierii księguje się na centrum kosztów CC-4410 [1].", ["ex.cc"], "supported", "cross-language"),
    ("pl", "Koszty działu inżynierii księguje się na centrum kosztów CC-1000 [1].", ["ex.cc"], "unsupported", "cross-language-wrong-identifier"),
    ("ru", "Расходы свыше 1 000 EUR дополнительно утверждает финансовый контролёр [1].", ["ex.app"], "supported", "cross-language"),
    ("ru", "Заявки старше 90 дней отклоняются автоматически [1].", ["ex.sub"], "supported", "cross-language"),
    ("ru", "Заявки старше 120 дней отклоняются автоматически [1].", ["ex.sub"], "unsupported", "cross-language-wrong-number"),
    ("en", "I hope this helps.", [], "no_claim", "no-claim"),
    # ---- tune: VPN (pl)
    ("pl", "Obsługiwana jest wersja klienta v2.8.1 lub nowsza [1].", ["vpn.req"], "supported", "exact"),
    ("pl", "Obsługiwana jest wersja klienta v2.7.1 lub nowsza [1].", ["vpn.req"], "unsupported", "wrong-version"),
    ("pl", "Od 1 marca 2024 roku brama odrzuca połączenia ze starszych wersji klienta [1].", ["vpn.req"], "supported", "date"),
    ("pl", "Od 1 marca 2023 roku brama odrzuca połączenia ze starszych wersji klienta [1].", ["vpn.req"], "unsupported", "wrong-date"),
    ("pl", "Laptop musi mieć włączone szyfrowanie dysku BitLocker lub FileVault [1].", ["vpn.req"], "supported", "name"),
    ("pl", "Domyślną bramą dla biura w Krakowie jest vpn-krk, a zapasową vpn-fra [1].", ["vpn.first"], "supported", "identifier"),
    ("pl", "Brama przełącza się automatycznie, gdy opóźnienie przekracza 150 ms [1].", ["vpn.first"], "supported", "paraphrase"),
    ("pl", "Brama przełącza się automatycznie, gdy opóźnienie przekracza 300 ms [1].", ["vpn.first"], "unsupported", "wrong-number"),
    ("pl", "Za tunelowanie dzielone odpowiada parametr `vpn.split_tunnel` [1].", ["vpn.split"], "supported", "code-span"),
    ("pl", "Za tunelowanie dzielone odpowiada parametr `vpn.split_mode` [1].", ["vpn.split"], "unsupported", "wrong-identifier"),
    ("pl", "Pracownicy działu finansów mogą sami zmienić to ustawienie [1].", ["vpn.split"], "unsupported", "contradiction"),
    ("pl", "Komunikat ERR-4521 oznacza, że certyfikat urządzenia wygasł [1].", ["vpn.err"], "supported", "identifier"),
    ("pl", "Komunikat ERR-4530 oznacza, że certyfikat urządzenia wygasł [2].", ["vpn.help", "vpn.err"], "unsupported", "wrong-identifier"),
    ("pl", "Certyfikaty urządzeń są ważne przez 180 dni [1].", ["vpn.err"], "supported", "exact"),
    ("pl", "Certyfikaty urządzeń są ważne przez 180 dni [1].", ["vpn.help", "vpn.err"], "unsupported", "wrong-source"),
    ("pl", "Gdy sieć hotelowa blokuje port UDP 51820, wybiera się tryb awaryjny TCP na porcie 443 [1].", ["vpn.err"], "supported", "port"),
    ("pl", "Gdy sieć hotelowa blokuje port UDP 51820, wybiera się tryb awaryjny TCP na porcie 8443 [1].", ["vpn.err"], "unsupported", "wrong-port"),
    ("pl", "Helpdesk odpowiada pod numerem wewnętrznym 2100 od 8:00 do 18:00 [1].", ["vpn.help"], "supported", "exact"),
    ("pl", "Certyfikat odnawia się w portalu samoobsługowym.", [], "uncited", "uncited"),
    ("pl", "Oto, co znalazłem w dokumentach.", [], "no_claim", "no-claim"),
    ("en", "Device certificates are valid for 180 days [1].", ["vpn.err"], "supported", "cross-language"),
    ("en", "The error ERR-4521 means the device certificate has expired [1].", ["vpn.err"], "supported", "cross-language"),
    ("en", "The fallback mode uses TCP on port 8080 [1].", ["vpn.err"], "unsupported", "cross-language-wrong-number"),
    ("ru", "Клиент SafeLink версии v2.8.1 или новее обязателен [1].", ["vpn.req"], "supported", "cross-language"),
    # ---- tune: docs/answering.md (en)
    ("en", "Ollama requests send `num_ctx`, capped at the model's own context from /api/show [1].", ["ans.eng"], "supported", "code-span"),
    ("en", "Ollama requests send `num_predict`, capped at the model's own context [1].", ["ans.eng"], "unsupported", "wrong-identifier"),
    ("en", "An engine that does not answer within LLM_TIMEOUT_S gives 504 llm_timeout [1].", ["ans.eng"], "supported", "identifier"),
    ("en", "An engine that does not answer within LLM_TIMEOUT_S gives 503 llm_timeout [1].", ["ans.eng"], "unsupported", "wrong-number"),
    ("en", "A stream that breaks half-way is replayed from the start [1].", ["ans.eng"], "unsupported", "contradiction"),
    ("en", "On 2 cores the first token came after 866 ms and the whole answer took 1.77 s [1].", ["ans.cpu"], "supported", "decimal"),
    ("en", "On 2 cores the first token came after 866 ms and the whole answer took 1.7 s [1].", ["ans.cpu"], "unsupported", "wrong-decimal"),
    ("en", "The demo and the tests use SmolLM2-135M-Instruct served by vLLM.", [], "uncited", "uncited"),
    # ---- test: API versioning (en)
    ("en", "Version 1 of the API will be retired on 30 June 2025 [1].", ["api.ver"], "supported", "date"),
    ("en", "Version 1 of the API will be retired on 30 June 2026 [1].", ["api.ver"], "unsupported", "wrong-date"),
    ("en", "Version 2 is the current version and gets all new features [1].", ["api.ver"], "supported", "paraphrase"),
    ("en", "New optional fields inside a major version do not change the version number [1].", ["api.ver"], "supported", "paraphrase"),
    ("en", "Changing an error status code is a breaking change [1].", ["api.brk"], "supported", "exact"),
    ("en", "Adding a new optional request parameter is a breaking change [1].", ["api.brk"], "unsupported", "contradiction"),
    ("en", "Endpoints are deprecated at least six months before they are removed [1].", ["api.dep"], "supported", "exact"),
    ("en", "Endpoints are deprecated at least 6 months before removal [1].", ["api.dep"], "supported", "number-word"),
    ("en", "Endpoints are deprecated at least three months before they are removed [1].", ["api.dep"], "unsupported", "wrong-number"),
    ("en", "Removed endpoints answer HTTP 410 Gone with the error code API-E0410 [1].", ["api.dep"], "supported", "identifier"),
    ("en", "Removed endpoints answer HTTP 404 with the error code API-E0404 [1].", ["api.dep"], "unsupported", "wrong-identifier"),
    ("en", "Removed endpoints answer HTTP 410 Gone with the error code API-E0410 [2].", ["api.dep", "api.exc"], "unsupported", "wrong-source"),
    ("en", "Deprecated endpoints send a Deprecation header and a Sunset header [1].", ["api.dep"], "supported", "name"),
    ("en", "The official SDKs for Python, Java and TypeScript support the two latest major versions [1].", ["api.sdk"], "supported", "name"),
    ("en", "The official SDKs for Python, Go and TypeScript support the two latest major versions [1].", ["api.sdk"], "unsupported", "wrong-name"),
    ("en", "Extensions are granted for at most 90 days, only once per endpoint [1].", ["api.exc"], "supported", "exact"),
    ("en", "Extensions are granted for at most 180 days [1].", ["api.exc"], "unsupported", "wrong-number"),
    ("en", "Every request to a /v1 path is rejected after the retirement date.", [], "uncited", "uncited"),
    ("pl", "Wersja 1 API zostanie wycofana 30 czerwca 2025 [1].", ["api.ver"], "supported", "cross-language"),
    ("pl", "Usunięte endpointy zwracają status 410 z kodem błędu API-E0410 [1].", ["api.dep"], "supported", "cross-language"),
    ("pl", "Przedłużenie można dostać maksymalnie na 60 dni [1].", ["api.exc"], "unsupported", "cross-language-wrong-number"),
    ("ru", "Версия 1 будет выведена из эксплуатации 30 июня 2025 года [1].", ["api.ver"], "supported", "cross-language"),
    ("ru", "Удалённые эндпоинты возвращают код ошибки API-E0401 [1].", ["api.dep"], "unsupported", "cross-language-wrong-identifier"),
    # ---- test: monitoring (en)
    ("en", "Prometheus scrapes every target every 15 seconds [1].", ["mon.met"], "supported", "exact"),
    ("en", "Prometheus scrapes every target every 30 seconds [1].", ["mon.met"], "unsupported", "wrong-number"),
    ("en", "Alerting rules are evaluated every 30 seconds, as set by alerting.eval_interval [1].", ["mon.met"], "supported", "identifier"),
    ("en", "Alerting rules are evaluated every 30 seconds, as set by alerting.rule_interval [1].", ["mon.met"], "unsupported", "wrong-identifier"),
    ("en", "Downsampled data is kept in long-term storage for 13 months [1].", ["mon.met"], "supported", "exact"),
    ("en", "Raw samples are kept for 15 days in the cluster's Prometheus [1].", ["mon.met"], "supported", "exact"),
    ("en", "Raw samples are kept for 15 days in the cluster's Prometheus [2].", ["mon.dash", "mon.met"], "supported", "right-second-source"),
    ("en", "Raw samples are kept for 15 days in the cluster's Prometheus [1].", ["mon.dash", "mon.met"], "unsupported", "wrong-source"),
    ("en", "Alert names use lowercase with underscores, for example orders_db_pool_saturated [1].", ["mon.rules"], "supported", "identifier"),
    ("en", "High CPU on its own should page the on-call engineer [1].", ["mon.rules"], "unsupported", "contradiction"),
    ("en", "A pull request that adds an alert without a runbook link fails the checks [1].", ["mon.rules"], "supported", "paraphrase"),
    ("en", "An alert firing more than five times a week without action counts as noise [1].", ["mon.noise"], "supported", "exact"),
    ("en", "An alert firing more than ten times a week without action counts as noise [1].", ["mon.noise"], "unsupported", "wrong-number"),
    ("en", "Dashboards not opened for 180 days are archived automatically [1].", ["mon.dash"], "supported", "exact"),
    ("en", "Dashboards not opened for 90 days are archived automatically [1].", ["mon.dash"], "unsupported", "wrong-number"),
    ("en", "Each service has one overview dashboard in Grafana with the golden signals [1].", ["mon.dash"], "supported", "name"),
    ("en", "Synthetic checks run every 60 seconds from three regions [1].", ["mon.syn"], "supported", "exact"),
    ("en", "A synthetic check pages as soon as one region fails [1].", ["mon.syn"], "unsupported", "contradiction"),
    ("en", "Synthetic checks run every 60 seconds from three regions.", [], "uncited", "uncited"),
    ("en", "Let me summarise the relevant parts.", [], "no_claim", "no-claim"),
    ("pl", "Prometheus zbiera metryki z każdego celu co 15 sekund [1].", ["mon.met"], "supported", "cross-language"),
    ("pl", "Surowe próbki są przechowywane przez 30 dni [1].", ["mon.met"], "unsupported", "cross-language-wrong-number"),
    ("ru", "Дашборды, которые не открывали 180 дней, архивируются автоматически [1].", ["mon.dash"], "supported", "cross-language"),
    # ---- test: rate limits (ru)
    ("ru", "Для тарифа Standard лимит составляет 600 запросов в минуту [1].", ["rl.gen"], "supported", "exact"),
    ("ru", "Для тарифа Standard лимит составляет 1000 запросов в минуту [1].", ["rl.gen"], "unsupported", "wrong-number"),
    ("ru", "Для тарифа Enterprise лимит составляет 3000 запросов в минуту [1].", ["rl.gen"], "supported", "exact"),
    ("ru", "Размер всплеска задаёт параметр `ratelimit.burst_size`, для Standard он равен 100 [1].", ["rl.gen"], "supported", "code-span"),
    ("ru", "Размер всплеска задаёт параметр `ratelimit.burst`, для Standard он равен 100 [1].", ["rl.gen"], "unsupported", "wrong-identifier"),
    ("ru", "Заголовок X-RateLimit-Remaining показывает, сколько запросов осталось в текущем окне [1].", ["rl.hdr"], "supported", "identifier"),
    ("ru", "Заголовок X-RateLimit-Left показывает, сколько запросов осталось [1].", ["rl.hdr"], "unsupported", "wrong-identifier"),
    ("ru", "При превышении лимита сервер возвращает HTTP 429 и код ошибки RL-0429 [1].", ["rl.over"], "supported", "identifier"),
    ("ru", "При превышении лимита сервер возвращает HTTP 503 и код ошибки RL-0503 [1].", ["rl.over"], "unsupported", "wrong-identifier"),
    ("ru", "Паузу между повторами удваивают, но не более чем до 60 секунд [1].", ["rl.over"], "supported", "paraphrase"),
    ("ru", "Ключ, получивший больше 10 000 ответов 429 за час, блокируется на 15 минут [1].", ["rl.over"], "supported", "number-format"),
    ("ru", "Ключ, получивший больше 10 000 ответов 429 за час, блокируется на 30 минут [1].", ["rl.over"], "unsupported", "wrong-number"),
    ("ru", "Эндпоинт /v2/reports/export принимает не более 10 запросов в час на ключ [1].", ["rl.spec"], "supported", "path"),
    ("ru", "Эндпоинт /v2/reports/download принимает не более 10 запросов в час на ключ [1].", ["rl.spec"], "unsupported", "wrong-path"),
    ("ru", "Эндпоинт /v2/reports/export принимает не более 10 запросов в час на ключ [2].", ["rl.spec", "rl.up"], "unsupported", "wrong-source"),
    ("ru", "Временное повышение лимитов предоставляется на срок до 14 дней [1].", ["rl.up"], "supported", "exact"),
    ("ru", "Временное повышение лимитов предоставляется на срок до 30 дней [1].", ["rl.up"], "unsupported", "wrong-number"),
    ("ru", "Эндпоинт /v2/auth/token ограничен 20 запросами в минуту с одного IP-адреса.", [], "uncited", "uncited"),
    ("ru", "Вот что я нашёл в документах.", [], "no_claim", "no-claim"),
    ("en", "The Standard plan allows 600 requests per minute per API key [1].", ["rl.gen"], "supported", "cross-language"),
    ("en", "Exceeding the limit returns HTTP 429 with error code RL-0429 [1].", ["rl.over"], "supported", "cross-language"),
    ("en", "Exceeding the limit returns HTTP 429 with error code RL-4290 [1].", ["rl.over"], "unsupported", "cross-language-wrong-identifier"),
    ("pl", "Eksport /v2/reports/export jest ograniczony do 10 żądań na godzinę [1].", ["rl.spec"], "supported", "cross-language"),
]


def main() -> None:
    out = ROOT / "eval/golden/citations.jsonl"
    lines = []
    for i, (lang, sentence, cited, label, kind) in enumerate(ROWS, 1):
        sources = [section(*S[key]) for key in cited]
        split = SPLIT[S[cited[0]][0]] if cited else ("test" if any(w in sentence for w in (
            "/v1", "Synthetic", "/v2/auth", "Let me", "Вот")) else "tune")
        doc_lang = {"en/": "en", "pl/": "pl", "ru/": "ru"}.get(sources[0]["path"][len(ML):len(ML) + 3], "en") if sources else None
        lines.append(json.dumps({"id": f"cit-{i:03d}", "split": split, "lang": lang, "doc_lang": doc_lang, "kind": kind,
                                 "label": label, "answer": sentence, "sources": sources}, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(lines)} rows")


if __name__ == "__main__":
    main()
