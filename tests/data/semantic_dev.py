"""The semantic cache's development set: labelled prompt pairs, split once into `tune` and `holdout`.

Each pair is (domain, kind, same, a, b): `a` is the cached prompt, `b` the new one; `same` says
whether `a`'s answer is right for `b`. Paraphrase kinds (same answer): typo, case_whitespace,
politeness, reorder, synonym, voice, rephrase, long_context. Near-miss kinds (another answer):
role_swap, direction, format, number, unit, date, negation, entity, language, programming_language,
comparison, scope, long_context_question, and the hand-written attribute, name, ... pairs of
semantic_pairs.py. Generated deterministically from the questions and
templates below (a seeded RNG places typos); the split is by a hash of the pair, fixed once:
thresholds and rules are chosen on `tune`, numbers are reported on `holdout` only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from hashlib import sha256

from tests.data import semantic_pairs


@dataclass(frozen=True)
class Pair:
    domain: str
    kind: str
    same: bool
    a: str
    b: str

    @property
    def split(self) -> str:
        return "tune" if sha256(f"{self.kind}\0{self.a}\0{self.b}".encode()).digest()[0] % 2 == 0 else "holdout"


# ---- questions that paraphrase kinds are made from --------------------------------------------------

QUESTIONS: dict[str, list[str]] = {
    "coding": [
        "How do I reverse a list in Python?", "How do I undo the last git commit?",
        "What is the difference between a process and a thread?", "How do I center a div with CSS?",
        "How do I remove duplicates from a list in Python?", "What does HTTP status 404 mean?",
        "How do I convert a string to an integer in Java?", "How do I read a file line by line in Python?",
        "What is a closure in JavaScript?", "How do I create a virtual environment in Python?",
        "How do I rename a branch in git?", "What is dependency injection?",
        "How do I sort a dictionary by value in Python?", "Why is my React component rendering twice?",
        "How do I list all running Docker containers?", "What is the difference between TCP and UDP?",
    ],
    "math": [
        "What is 15% of 80?", "What is the square root of 144?", "How do I calculate the area of a circle?",
        "What is the derivative of x^2?", "Is 97 a prime number?", "What is the Pythagorean theorem?",
        "How do I solve a quadratic equation?", "What is the sum of the angles in a triangle?",
    ],
    "geography": [
        "What is the capital of Australia?", "How tall is Mount Everest?", "What currency does Japan use?",
        "What is the longest river in Africa?", "How many countries are in the European Union?",
        "What language is spoken in Brazil?", "What time zone is Tokyo in?",
    ],
    "support": [
        "How do I reset my password?", "How do I cancel my subscription?", "Where can I download my invoices?",
        "How do I change the email address on my account?", "What payment methods do you accept?",
        "How do I enable two-factor authentication?", "Can I get a refund for my order?",
        "How do I export my data as a spreadsheet?", "Why was my card declined?",
    ],
    "health": [
        "What are the symptoms of the flu?", "How much water should I drink per day?",
        "What are the benefits of regular exercise?", "How many hours of sleep does an adult need?",
        "What foods are high in vitamin C?", "Is it safe to take ibuprofen with coffee?",
    ],
    "cooking": [
        "How long should I boil an egg for a runny yolk?", "How do I make sourdough starter?",
        "What can I use instead of buttermilk?", "How do I keep rice from sticking to the pot?",
        "What temperature should I roast a chicken at?", "How do I caramelize onions?",
    ],
    "finance": [
        "What is the difference between a Roth IRA and a traditional IRA?", "How does compound interest work?",
        "What is an index fund?", "How is capital gains tax calculated?", "What is a good credit score?",
        "Should I pay off debt or invest first?",
    ],
    "science": [
        "Why is the sky blue?", "How does photosynthesis work?", "What is the boiling point of water?",
        "What is the speed of light?", "How do vaccines train the immune system?", "What causes the seasons?",
    ],
    "writing": [
        "What is the difference between affect and effect?", "When should I use a semicolon?",
        "How do I write a strong thesis statement?", "What is passive voice?",
    ],
    "travel": [
        "Do I need a visa to visit Japan?", "What is the best time of year to visit Iceland?",
        "How early should I arrive at the airport for an international flight?",
        "Can I bring a power bank in my checked luggage?",
    ],
}

# A question with a trailing phrase that may move to the front: (question, fronted form).
REORDERS: list[tuple[str, str, str]] = [
    ("coding", "How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
    ("coding", "How do I read a file line by line in Python?", "In Python, how do I read a file line by line?"),
    ("coding", "How do I convert a string to an integer in Java?", "In Java, how do I convert a string to an integer?"),
    ("coding", "How do I center a div with CSS?", "With CSS, how do I center a div?"),
    ("coding", "How do I create a virtual environment in Python?",
     "In Python, how do I create a virtual environment?"),
    ("coding", "How do I rename a branch in git?", "In git, how do I rename a branch?"),
    ("coding", "How do I sort a dictionary by value in Python?", "In Python, how do I sort a dictionary by value?"),
    ("coding", "How do I list all running containers with Docker?",
     "With Docker, how do I list all running containers?"),
    ("coding", "How do I parse JSON in Go?", "In Go, how do I parse JSON?"),
    ("coding", "How do I add a column to a table in PostgreSQL?", "In PostgreSQL, how do I add a column to a table?"),
    ("support", "How do I change my password on the mobile app?", "On the mobile app, how do I change my password?"),
    ("support", "How do I export my contacts on the web version?", "On the web version, how do I export my contacts?"),
    ("support", "Where do I find my invoices in the billing settings?",
     "In the billing settings, where do I find my invoices?"),
    ("cooking", "How long should I bake salmon at 200 degrees?", "At 200 degrees, how long should I bake salmon?"),
    ("cooking", "How do I make pancakes without eggs?", "Without eggs, how do I make pancakes?"),
    ("travel", "What should I pack for a week in Iceland?", "For a week in Iceland, what should I pack?"),
    ("travel", "Is tipping expected in restaurants in Japan?", "In Japan, is tipping expected in restaurants?"),
    ("finance", "How much should I save each month for retirement?",
     "For retirement, how much should I save each month?"),
    ("health", "How much protein do I need per day for muscle growth?",
     "For muscle growth, how much protein do I need per day?"),
    ("math", "How do I find the median of a list in Excel?", "In Excel, how do I find the median of a list?"),
    ("writing", "How do I cite a website in APA style?", "In APA style, how do I cite a website?"),
    ("science", "What happens to water at high altitude when boiling?",
     "When boiling at high altitude, what happens to water?"),
]

# Same question in other words (some synonyms a fixed table knows, some it does not).
SYNONYMS: list[tuple[str, str, str]] = [
    ("support", "How do I fix a leaking faucet?", "How do I repair a leaky faucet?"),
    ("coding", "What is the fastest way to sort a list in Python?", "What is the quickest way to sort a list in Python?"),
    ("cooking", "How do I make a big batch of chili?", "How do I make a large batch of chili?"),
    ("travel", "How do I buy a train ticket in Italy?", "How do I purchase a train ticket in Italy?"),
    ("health", "What should kids eat for breakfast?", "What should children eat for breakfast?"),
    ("general", "What is the best movie of 1994?", "What is the best film of 1994?"),
    ("coding", "How do I calculate the average of a column in pandas?",
     "How do I compute the average of a column in pandas?"),
    ("support", "How do I begin a free trial?", "How do I start a free trial?"),
    ("finance", "Is it a good idea to buy a used car?", "Is it a good idea to purchase a used car?"),
    ("health", "When should I see a doctor for a cough?", "When should I see a physician for a cough?"),
    ("coding", "What is the method to clone a repository?", "What is the way to clone a repository?"),
    ("general", "Explain how a bill becomes a law.", "Describe how a bill becomes a law."),
    ("cooking", "Can I freeze cooked rice?", "Is it possible to freeze cooked rice?"),
    ("support", "I forgot my password, what now?", "I can't remember my password, what now?"),
    ("travel", "What are cheap things to do in Paris?", "What are inexpensive things to do in Paris?"),
    ("coding", "What does this error message mean: segmentation fault?",
     "What is the meaning of this error message: segmentation fault?"),
    ("finance", "How do I need to report freelance income?", "How am I required to report freelance income?"),
    ("health", "What helps with a sore throat?", "What relieves a sore throat?"),
    ("science", "Why do leaves change color in autumn?", "Why do leaves change color in fall?"),
    ("coding", "How do I use environment variables in Node?", "How do I utilize environment variables in Node?"),
    ("general", "Who is the author of Pride and Prejudice?", "Who wrote Pride and Prejudice?"),
    ("math", "What is the formula for the volume of a sphere?", "How do you compute the volume of a sphere?"),
    ("support", "Can I change my username?", "Is it possible to change my username?"),
    ("cooking", "How many minutes should I steam broccoli?", "How long should I steam broccoli?"),
]

VOICE: list[tuple[str, str, str]] = [
    ("general", "Who painted the Mona Lisa?", "The Mona Lisa was painted by whom?"),
    ("general", "Who wrote Hamlet?", "Hamlet was written by whom?"),
    ("science", "Who discovered penicillin?", "By whom was penicillin discovered?"),
    ("general", "Who invented the telephone?", "The telephone was invented by whom?"),
    ("science", "Who developed the theory of relativity?", "The theory of relativity was developed by whom?"),
    ("general", "Who designed the Eiffel Tower?", "The Eiffel Tower was designed by whom?"),
    ("general", "Who composed the Four Seasons?", "The Four Seasons was composed by whom?"),
    ("general", "Who built the Great Wall of China?", "The Great Wall of China was built by whom?"),
    ("science", "Who first described the structure of DNA?", "The structure of DNA was first described by whom?"),
    ("general", "Who founded Microsoft?", "Microsoft was founded by whom?"),
]

POLITE_PREFIXES = ["Please tell me: ", "Could you help me? ", "Hi there, ", "Quick question: ", "Hello! ",
                   "Hey, ", "Please, ", "I was wondering, "]
POLITE_SUFFIXES = [" Thanks!", " Thank you.", " Thanks in advance!", " Thanks a lot.", " Please."]


def typo(text: str, rng: random.Random) -> str | None:
    """One typing slip in one longer word: swapped, dropped, doubled or neighbouring letter."""
    words = text.split(" ")
    choices = [i for i, w in enumerate(words) if len(w.strip("?.,!:")) >= 5 and w.strip("?.,!:").isalpha()]
    if not choices:
        return None
    i = rng.choice(choices)
    w = words[i]
    core = w.rstrip("?.,!:")
    tail = w[len(core):]
    j = rng.randrange(1, len(core) - 1)
    kind = rng.choice(["swap", "drop", "double", "near"])
    if kind == "swap":
        core = core[:j] + core[j + 1] + core[j] + core[j + 2:]
    elif kind == "drop":
        core = core[:j] + core[j + 1:]
    elif kind == "double":
        core = core[:j] + core[j] + core[j:]
    else:
        near = {"a": "s", "e": "r", "i": "o", "o": "p", "u": "y", "n": "m", "t": "r", "s": "d", "r": "t",
                "l": "k", "c": "v", "d": "f", "m": "n", "h": "j", "g": "h", "p": "o", "y": "u", "b": "v"}
        core = core[:j] + near.get(core[j].lower(), "e") + core[j + 1:]
    words[i] = core + tail
    return " ".join(words)


def case_whitespace(text: str, rng: random.Random) -> str:
    kind = rng.choice(["lower", "upper", "spaces", "nopunct", "trail"])
    if kind == "lower":
        return text.lower()
    if kind == "upper":
        return text.upper()
    if kind == "spaces":
        return "  " + text.replace(" ", "  ", 2) + " "
    if kind == "nopunct":
        return text.rstrip("?.!")
    return text + "\n\n"


def politeness(text: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        prefix = rng.choice(POLITE_PREFIXES)
        return prefix + (text[0].lower() + text[1:] if prefix.endswith(", ") else text)
    return text + rng.choice(POLITE_SUFFIXES)


# ---- near misses ---------------------------------------------------------------------------------

def near_misses() -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def add(domain: str, kind: str, template: str, values: list[tuple[str, str]]) -> None:
        for x, y in values:
            rows.append((domain, kind, template.format(x), template.format(y)))

    def swap(domain: str, template: str, values: list[tuple[str, str]]) -> None:
        for x, y in values:
            rows.append((domain, "role_swap", template.format(x, y), template.format(y, x)))

    swap("finance", "Should I move my savings from {} into {}?", [("a savings account", "index funds"),
         ("bonds", "stocks"), ("my 401k", "an IRA"), ("cash", "gold"), ("a CD", "treasury bills"),
         ("crypto", "real estate")])
    swap("health", "Does {} help the body absorb {}?", [("vitamin C", "iron"), ("vitamin D", "calcium"),
         ("fat", "vitamin A"), ("magnesium", "zinc")])
    swap("coding", "How do I merge {} into {} in git?", [("main", "feature"), ("develop", "release")])
    swap("coding", "Can a {} be cast to a {} in Java?", [("long", "int"), ("double", "float"), ("String", "Object")])
    swap("general", "Is a {} a kind of {}?", [("square", "rectangle"), ("tomato", "fruit"), ("whale", "mammal")])
    swap("cooking", "Can I substitute {} for {} in brownies?", [("butter", "oil"), ("honey", "sugar")])
    swap("general", "Why did {} declare war on {}?", [("Britain", "Germany"), ("Spain", "England"),
         ("France", "Prussia")])
    swap("support", "How do I transfer credits from {} to {}?", [("my personal account", "the team account"),
         ("the old workspace", "the new workspace")])
    swap("coding", "How do I copy files from {} to {} with rsync?", [("the server", "my laptop"),
         ("the container", "the host")])
    swap("health", "Can {} cause {}?", [("anxiety", "insomnia"), ("dehydration", "headaches"),
         ("stress", "high blood pressure")])
    swap("general", "Did {} influence {}?", [("Plato", "Aristotle"), ("the Beatles", "Bob Dylan")])
    swap("travel", "Is it cheaper to fly from {} to {}?", [("Boston", "Chicago"), ("Rome", "Madrid")])

    conv = "Convert {}."
    add("math", "direction", conv, [("20 Celsius to Fahrenheit", "20 Fahrenheit to Celsius"),
        ("10 kilometers to miles", "10 miles to kilometers"), ("100 USD to EUR", "100 EUR to USD"),
        ("5 pounds to kilograms", "5 kilograms to pounds"), ("3 cups to liters", "3 liters to cups")])
    add("general", "direction", "Translate 'good morning' from {}.", [("English to French", "French to English"),
        ("Spanish to German", "German to Spanish"), ("Italian to English", "English to Italian")])
    add("travel", "direction", "What is the flight time from {}?", [("London to New York", "New York to London"),
        ("Tokyo to Sydney", "Sydney to Tokyo")])
    add("coding", "direction", "How do I migrate a project from {}?", [("MySQL to PostgreSQL", "PostgreSQL to MySQL"),
        ("Python 2 to Python 3", "Python 3 to Python 2"), ("JavaScript to TypeScript", "TypeScript to JavaScript")])

    add("writing", "format", "Explain what an API is {}.", [("in one sentence", "in one paragraph"),
        ("briefly", "in detail"), ("to a five-year-old", "to a software engineer"), ("as a bullet list", "as a table")])
    add("writing", "format", "Write a {} email declining a meeting invitation.", [("formal", "casual"),
        ("short", "long"), ("friendly", "firm"), ("polite", "blunt")])
    add("writing", "format", "Summarize the causes of World War I {}.", [("in three bullet points", "in five bullet points"),
        ("in 50 words", "in 200 words"), ("for a high school student", "for a historian")])
    add("cooking", "format", "Give me a {} recipe for lasagna.", [("quick", "traditional"), ("vegan", "classic"),
        ("simple", "detailed")])
    add("coding", "format", "Return the list of users as {}.", [("JSON", "YAML"), ("CSV", "XML")])
    add("writing", "format", "Rewrite this paragraph in a {} tone.", [("formal", "casual"), ("playful", "serious"),
        ("neutral", "persuasive")])
    add("writing", "format", "Write a {} poem about the sea.", [("short", "long"), ("rhyming", "free verse"),
        ("happy", "sad")])
    add("coding", "format", "Explain recursion {}.", [("with an example", "without code"), ("simply", "rigorously")])

    add("math", "number", "What is {}?", [("15% of 80", "25% of 80"), ("12 times 8", "12 times 9"),
        ("the square root of 144", "the square root of 169"), ("2 to the power of 10", "2 to the power of 12"),
        ("17 divided by 4", "17 divided by 5")])
    add("math", "number", "Is {} a prime number?", [("97", "91"), ("101", "111"), ("7919", "7917")])
    add("math", "number", "What is the factorial of {}?", [("5", "6"), ("10", "12")])
    add("finance", "number", "How much will $1,000 grow to in {} years at 5% interest?", [("10", "20"), ("5", "15")])
    add("travel", "number", "Can I bring {} liquids in my carry-on?", [("100 ml", "200 ml")])
    add("coding", "number", "What does HTTP status {} mean?", [("404", "403"), ("500", "503"), ("301", "302")])
    add("cooking", "number", "How many calories are in {}?", [("two eggs", "three eggs"), ("1 banana", "2 bananas"),
        ("100 grams of rice", "200 grams of rice")])
    add("finance", "number", "How much is the monthly payment on a {} loan?", [("$20,000", "$30,000"),
        ("5-year", "7-year")])
    add("health", "number", "Is a resting heart rate of {} beats per minute normal?", [("50", "110"), ("60", "45")])

    add("cooking", "unit", "How many {} are in a pound?", [("grams", "ounces"), ("cups of flour", "tablespoons of flour")])
    add("math", "unit", "How many {} are in a mile?", [("feet", "yards"), ("meters", "kilometers"), ("inches", "feet")])
    add("coding", "unit", "How many {} are in a gigabyte?", [("megabytes", "kilobytes"), ("bytes", "bits")])
    add("cooking", "unit", "Bake the cake at 180 {}: how long?", [("Celsius", "Fahrenheit")])
    add("health", "unit", "Is 5 {} of melatonin a safe dose?", [("mg", "g")])

    add("general", "date", "What day of the week was {}?", [("July 4, 1776", "July 4, 1777"),
        ("January 1, 2000", "January 1, 2001"), ("March 3, 1990", "March 4, 1990")])
    add("general", "date", "What major events happened in {}?", [("1969", "1968"), ("2008", "2009"),
        ("the 1920s", "the 1930s")])
    add("finance", "date", "When is the tax filing deadline in {}?", [("2025", "2026")])
    add("support", "date", "Why was I charged on {}?", [("the 1st", "the 15th"), ("March 3", "March 13")])
    add("general", "date", "Who won the World Cup in {}?", [("2014", "2018"), ("1998", "2002")])
    add("travel", "date", "Is the Louvre open on {}?", [("Monday", "Tuesday"), ("Christmas Day", "New Year's Day")])
    add("support", "date", "What is the weather forecast for {}?", [("today", "tomorrow")])

    add("health", "negation", "Which foods are {}safe for dogs?", [("", "not ")])
    add("coding", "negation", "Why {} my code compile?", [("does", "doesn't")])
    add("support", "negation", "Why {} I receive the confirmation email?", [("did", "didn't")])
    add("general", "negation", "Which countries {} use the euro?", [("", "do not ")])
    add("cooking", "negation", "Can you eat {} potatoes?", [("raw", "non-raw")])
    add("finance", "negation", "Which expenses are {}tax deductible?", [("", "not ")])
    add("travel", "negation", "Which countries {} a visa for US citizens?", [("require", "don't require")])
    add("health", "negation", "What should I {}do after a concussion?", [("", "never ")])

    add("geography", "entity", "What is the capital of {}?", [("Australia", "Austria"), ("Canada", "Chile"),
        ("Nigeria", "Niger"), ("Slovakia", "Slovenia")])
    add("general", "entity", "Who founded {}?", [("Microsoft", "Apple"), ("Amazon", "eBay"), ("Tesla", "SpaceX")])
    add("geography", "entity", "What is the population of {}?", [("Paris", "Lyon"), ("Texas", "Florida"),
        ("India", "Indonesia"), ("Sweden", "Switzerland")])
    add("general", "entity", "When was {} born?", [("Mozart", "Beethoven"), ("Einstein", "Newton"),
        ("Marie Curie", "Ada Lovelace")])
    add("coding", "entity", "How do I install {} on Ubuntu?", [("nginx", "apache"), ("postgres", "mysql"),
        ("docker", "podman")])
    add("travel", "entity", "What is the best way to get from the airport to downtown {}?", [("Lisbon", "Porto"),
        ("Denver", "Dallas")])
    add("health", "entity", "What are the side effects of {}?", [("ibuprofen", "acetaminophen"),
        ("amoxicillin", "azithromycin")])
    add("support", "entity", "How do I connect {} to my account?", [("Slack", "Teams"), ("Google Drive", "Dropbox")])

    add("general", "language", "How do you say 'thank you' in {}?", [("French", "Spanish"), ("Japanese", "Korean"),
        ("German", "Dutch"), ("Portuguese", "Italian")])
    add("writing", "language", "Translate 'where is the station' into {}.", [("Italian", "Polish"), ("Greek", "Turkish")])
    add("support", "language", "Can I use the app in {}?", [("Hindi", "Bengali")])
    add("writing", "language", "Write a birthday message in {}.", [("French", "German"), ("Arabic", "Hebrew")])
    add("general", "language", "What is the most common greeting in {}?", [("Mandarin", "Cantonese")])

    add("coding", "programming_language", "How do I read a file line by line in {}?", [("Python", "Rust"),
        ("Java", "Kotlin"), ("Go", "C")])
    add("coding", "programming_language", "How do I parse JSON in {}?", [("Python", "JavaScript"), ("Swift", "Ruby")])
    add("coding", "programming_language", "What is the {} equivalent of a hash map?", [("Python", "C++"),
        ("Go", "Java")])
    add("coding", "programming_language", "How do I start a new project with {}?", [("Django", "Flask"),
        ("React", "Vue")])
    add("coding", "programming_language", "How do I reverse a string in {}?", [("Python", "Java"), ("C#", "Go"),
        ("PHP", "Perl")])
    add("coding", "programming_language", "How do I write a unit test in {}?", [("JavaScript", "TypeScript"),
        ("Scala", "Haskell")])

    add("general", "comparison", "Is a cheetah {} than a lion?", [("faster", "slower")])
    add("general", "comparison", "Which is {}, the Sun or Jupiter?", [("bigger", "smaller"), ("hotter", "colder")])
    add("coding", "comparison", "Is Python {} than Java for web servers?", [("faster", "slower"), ("better", "worse")])
    add("finance", "comparison", "Are index funds {} than bonds?", [("riskier", "safer")])
    add("health", "comparison", "Which has {} caffeine, tea or coffee?", [("more", "less")])
    add("math", "comparison", "Round 2.5 {} to the nearest integer.", [("up", "down")])
    add("coding", "comparison", "Sort the list in {} order.", [("ascending", "descending")])
    add("general", "comparison", "Which planet is {} to the Sun, Venus or Mars?", [("closer", "farther")])
    add("finance", "comparison", "Is renting {} than buying in the long run?", [("cheaper", "more expensive")])
    add("health", "comparison", "Is brown rice {} than white rice?", [("healthier", "less healthy")])
    add("coding", "comparison", "Is a list {} than a tuple in Python?", [("faster", "slower"), ("larger", "smaller")])

    add("math", "scope", "List {} prime numbers below 50.", [("all the", "the first five"), ("all", "the even")])
    add("coding", "scope", "Delete {} rows in the users table.", [("all", "duplicate"), ("all", "the first 10")])
    add("general", "scope", "Do {} birds fly?", [("all", "some")])
    add("support", "scope", "Can I export {} my invoices at once?", [("all", "only")])
    add("coding", "scope", "How do I stop {} running containers?", [("all", "one of the")])
    add("finance", "scope", "Are {} dividends taxed?", [("all", "qualified")])
    add("cooking", "scope", "Should I remove {} the seeds from a jalapeño?", [("all", "some of")])
    add("coding", "scope", "How do I undo {} commits in git?", [("all my local", "only the last two")])
    add("support", "scope", "Can I delete {} my messages?", [("all", "some of")])
    add("general", "scope", "Are {} mushrooms poisonous?", [("all", "most")])
    add("math", "scope", "Are {} squares rectangles?", [("all", "some")])
    return rows


# ---- long prompts: the same pasted context, a question at the end ---------------------------------

EXCERPTS = [
    ("Storage is counted per workspace. Every file uploaded by a member counts toward the workspace's "
     "quota at its full size, including files shared into other workspaces, which count only once, in "
     "the workspace that owns them. Version history keeps up to 100 earlier versions of each file for "
     "30 days on paid plans; earlier versions count toward storage at their own size. Thumbnails and "
     "previews that the service generates are not counted. Administrators can see a breakdown by member "
     "and by folder on the Storage page, refreshed every hour. When a workspace exceeds its quota, "
     "uploads are paused until space is freed or the plan is upgraded; existing files stay available."),
    ("Deleted files move to the trash, where they stay for 30 days before they are removed for good. "
     "Files in the trash still count toward storage until the trash is emptied or they expire. Only "
     "the owner of a file or an administrator can restore it from the trash. Restoring a file also "
     "restores its version history and its sharing settings, unless the people it was shared with have "
     "left the workspace. Emptying the trash cannot be undone. Administrators can set a shorter trash "
     "period for the whole workspace, between 1 and 30 days, on the Retention page of the admin console."),
    ("Exports are available in CSV and JSON. A full workspace export includes every file's metadata, "
     "the member list and the audit log for the last 180 days; file contents are exported separately "
     "as a ZIP archive per folder. Exports are prepared in the background and a download link is sent "
     "by email; the link expires after 7 days. Large exports are split into parts of at most 10 GB. "
     "Only administrators can start a full export; members can export the files they own from the "
     "file menu. Exports do not include items in the trash."),
]
LONG_SAME = [
    ("How is storage counted for old file versions?", "how is storage counted for old file versions?"),
    ("Do files in the trash count toward storage?", "Do files in the trash count toward storage? Thanks!"),
    ("How long do exports stay available to download?", "How long do exports stay available to downlaod?"),
    ("Who can restore a deleted file?", "Please tell me: who can restore a deleted file?"),
    ("What happens when a workspace goes over its quota?", "What happens when a workspace goes over its quota"),
    ("Can members start a full export?", "Can members start a full export? Thank you."),
    ("Which formats can I export in?", "Which formats can I export in ?"),
    ("How long do deleted files stay in the trash?", "How long do deleted files stay in the trahs?"),
]
LONG_DIFFERENT = [
    ("How is storage counted for old file versions?", "Do files in the trash count toward storage?"),
    ("How long do exports stay available to download?", "How long do deleted files stay in the trash?"),
    ("Who can restore a deleted file?", "Who can start a full export?"),
    ("Can members start a full export?", "Can members restore a deleted file?"),
    ("Are thumbnails counted toward storage?", "Are exports counted toward storage?"),
    ("What is the largest size of an export part?", "What is the largest number of file versions kept?"),
    ("Do exports include items in the trash?", "Do restores include the version history?"),
    ("How often is the storage breakdown refreshed?", "How often is the trash emptied?"),
]


def long_prompt(question: str, order: int = 0) -> str:
    excerpts = EXCERPTS[order:] + EXCERPTS[:order]
    return "Answer from these excerpts of our help center.\n\n" + "\n\n".join(
        f"Excerpt {i + 1}:\n{e}" for i, e in enumerate(excerpts)) + f"\n\nQuestion: {question}"


def pairs() -> list[Pair]:
    rng = random.Random(20261204)
    out: list[Pair] = []
    for domain, questions in QUESTIONS.items():
        for q in questions:
            if (slipped := typo(q, rng)) is not None:
                out.append(Pair(domain, "typo", True, q, slipped))
            out.append(Pair(domain, "case_whitespace", True, q, case_whitespace(q, rng)))
            out.append(Pair(domain, "politeness", True, q, politeness(q, rng)))
    out += [Pair(d, "reorder", True, a, b) for d, a, b in REORDERS]
    out += [Pair(d, "synonym", True, a, b) for d, a, b in SYNONYMS]
    out += [Pair(d, "voice", True, a, b) for d, a, b in VOICE]
    out += [Pair(d, k, False, a, b) for d, k, a, b in near_misses()]
    out += [Pair(d, "rephrase", True, a, b) for d, _, a, b in semantic_pairs.PARAPHRASES]
    out += [Pair(d, k, False, a, b) for d, k, a, b in semantic_pairs.NEAR_MISSES]
    out += [Pair("rag", "long_context", True, long_prompt(a), long_prompt(b)) for a, b in LONG_SAME]
    out += [Pair("rag", "long_context_question", False, long_prompt(a), long_prompt(b)) for a, b in LONG_DIFFERENT]
    out += [Pair("rag", "long_context_question", False, long_prompt(a, 0), long_prompt(a, 1))
            for a, _ in LONG_DIFFERENT[:4]]  # the same question over other excerpts (in another order)
    return out


PAIRS = pairs()
TUNE = [p for p in PAIRS if p.split == "tune"]
HOLDOUT = [p for p in PAIRS if p.split == "holdout"]
