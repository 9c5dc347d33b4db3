"""Safe refusals written by the project: opener x reason x redirection, deterministic per question.

No package ships BeaverTails' safe answers, so the offline alignment set pairs each harmful question with a
composed refusal: the reason fits the question's risk group, the opener and redirection vary, all a pure function
of (seed, normalised question). A fraction can be real refusals from pyrit's human-labelled data instead."""

import hashlib
import random

from .templates import normalize_question

OPENERS = (
    "I'm sorry, but I can't help with that.", "I can't help with this request.",
    "I won't be able to assist with that.", "Sorry, I can't provide that.", "I have to decline this request.",
    "That's not something I can help with.", "I'm not able to do that.", "I'm afraid I can't assist with this.",
    "I must decline.", "No, I can't help with that.", "I'm going to have to say no to this one.",
    "Unfortunately, I can't do what you're asking.",
)

REASONS = {
    "illegal": (
        "It asks for help with something illegal that could hurt people.",
        "Helping with this could enable a crime and cause real harm.",
        "This would mean assisting with unlawful activity.",
        "Providing this could help someone break the law and put others at risk.",
        "I don't give guidance that facilitates criminal acts.",
    ),
    "violence": (
        "It could be used to injure or endanger people.",
        "I don't provide information that helps anyone cause physical harm.",
        "This could lead to violence, and I won't contribute to that.",
        "Giving these details could put lives at risk.", "I avoid anything that could help someone hurt others.",
    ),
    "cyber": (
        "It could be used to break into systems or steal data.",
        "Helping with this could compromise other people's security.",
        "I don't help create malware, exploits or attacks on computer systems.",
        "This would put people's accounts, devices and data at risk.",
        "Unauthorised access to systems is harmful and usually illegal.",
    ),
    "privacy": (
        "It would expose private information about a person.",
        "I don't share or infer personal details about individuals.", "This would intrude on someone's privacy.",
        "Personal and sensitive data should stay private and protected.",
        "I can't help track, identify or profile people without their consent.",
    ),
    "hate": (
        "It would demean people based on who they are.",
        "I don't produce content that promotes hatred or discrimination.",
        "This kind of content can hurt and marginalise people.",
        "Stereotypes and insults about groups of people cause real harm.",
        "I aim to treat everyone with respect, and this request doesn't.",
    ),
    "misinformation": (
        "It would spread false or misleading information.", "I don't create content designed to deceive people.",
        "Misinformation can mislead people and erode trust.", "This could be used to manipulate or defraud others.",
        "I try to stay accurate and won't fabricate claims.",
    ),
    "sexual": (
        "I don't produce sexually explicit content.", "This request is for explicit material that I don't create.",
        "That kind of explicit content isn't something I write.", "I keep my answers free of sexual content.",
        "This crosses a line on explicit content that I don't cross.",
    ),
    "wellbeing": (
        "This needs someone who can properly support you, and an AI assistant isn't a substitute.",
        "I'm not qualified to give medical or psychological advice, and getting it wrong could hurt you.",
        "Your safety matters, and this deserves care from a real professional.",
        "I can't replace a doctor, therapist or counsellor on something this important.",
        "I don't want to give advice that could put your health at risk.",
    ),
    "general": (
        "It could cause harm to people.", "This could be used in ways that hurt others.",
        "Answering could contribute to harm, so I won't.",
        "This goes against my commitment to being safe and helpful.",
        "The request is harmful, and I don't assist with harmful requests.",
    ),
}

REDIRECTIONS = {
    "wellbeing": (
        "Please reach out to a doctor, a counsellor or someone you trust.",
        "If you are in danger or thinking about harming yourself, please contact local emergency services or a crisis line right away.",
        "Talking to a qualified professional is the best next step, and I'm happy to help you find the right kind of support.",
    ),
    "default": (
        "Is there something else I can help you with?", "I'm happy to help with a different question.",
        "If you have a legitimate goal in mind, I can suggest safe and legal ways to approach it.",
        "I can share general safety information instead, if that helps.",
        "Let me know if there's another topic I can assist with.",
        "If you're curious about the subject, I can point you to lawful, educational resources.", "",
    ),
}

_KEYWORDS = (  # (group, lower-case keywords); first match wins
    ("wellbeing", ("self-harm", "self harm", "suicid", "mental health", "medical", "therap", "medication",
                   "depress", "anxiety", "panic attack", "emotional", "lonely")),
    ("sexual", ("sexual", "lewd", "porn", "adult content", "erotic", "dirty joke", "fetish", "adult toys")),
    ("cyber", ("hack", "malware", "cyber", "virus", "exploit", "ransomware", "phishing", "password", "confidentiality")),
    ("privacy", ("privacy", "personal", "information_hazard", "surveillance", "dox")),
    ("hate", ("hate", "discrimination", "toxicity", "harassment", "representational", "offensive", "bias")),
    ("misinformation", ("misinformation", "disinformation", "deception", "information integrity", "fraud", "fake")),
    ("violence", ("violence", "weapon", "bodily", "loss of life", "physical", "terror", "bomb", "kill")),
    ("illegal", ("illegal", "crime", "criminal", "drug", "theft", "malicious_uses", "financial")),
)


def compose_refusal(question: str, category: str = "", seed: int = 0, extra: tuple[str, ...] = (),
                    extra_fraction: float = 0.0) -> str:
    """A safe refusal for ``question``; same inputs -> same text. The reason's group (``REASONS``) comes from the
    question's words, else its category. ``extra``: real refusal texts (e.g. pyrit's) used with probability
    ``extra_fraction`` instead."""
    digest = hashlib.sha256(f"{seed}\x00{normalize_question(question)}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    if extra and rng.random() < extra_fraction:
        return rng.choice(sorted(extra))
    group = next((g for text in (question.lower(), category.lower()) for g, words in _KEYWORDS
                  if any(w in text for w in words)), "general")
    reds = REDIRECTIONS["wellbeing" if group == "wellbeing" else "default"]
    parts = [rng.choice(OPENERS), rng.choice(REASONS[group]), rng.choice(reds)]
    return " ".join(p for p in parts if p)
