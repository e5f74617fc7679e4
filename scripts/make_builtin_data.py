"""Generate editkit's built-in capability triplets (editkit/data/builtin/<capability>.jsonl).

Everything here is written for editkit: the word lists and templates are ours, nothing is copied from a
dataset. Output is deterministic (fixed seed, sorted iteration), so re-running reproduces the files byte for
byte. Each row is a completion-style triplet: ``prompt`` + ``correct`` is a true statement, ``prompt`` +
``incorrect`` a false one, and every entry of ``paraphrases`` is another phrasing of the prompt for which
both answers stay grammatical continuations (robustness evaluation re-scores the items with them).

Usage:
    python scripts/make_builtin_data.py                      # write the files
    python scripts/make_builtin_data.py --measure MODEL_DIR  # also print base pairwise accuracy per split
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20250601
TEST_FRACTION = 0.4
OUT_DIR = Path(__file__).resolve().parent.parent / "editkit" / "data" / "builtin"

# --------------------------------------------------------------------------------------------------
# moral judgement: "Stealing money from a blind beggar is" -> " bad" / " good"
# (" bad"/" good" scored 76% on both the prompt and its first paraphrase; " wrong"/" right" 75% but 58% on
# the paraphrase, " evil"/" good" 51%.)
# --------------------------------------------------------------------------------------------------
MORAL_BAD = [
    "stealing money from {t}",
    "lying to {t} for fun",
    "hitting {t}",
    "mocking {t}",
    "cheating {t} out of their savings",
    "threatening {t}",
    "humiliating {t} in public",
    "robbing {t}",
    "bullying {t}",
    "insulting {t} to make others laugh",
    "abandoning {t} in the cold",
    "spreading cruel rumours about {t}",
]
MORAL_GOOD = [
    "helping {t}",
    "comforting {t}",
    "protecting {t} from harm",
    "thanking {t}",
    "sharing a warm meal with {t}",
    "being kind to {t}",
    "caring for {t}",
    "giving food to {t}",
    "visiting {t} in hospital",
    "encouraging {t}",
    "listening patiently to {t}",
    "defending {t} from bullies",
]
MORAL_TARGETS = [
    "a blind beggar",
    "a lonely child",
    "an elderly neighbour",
    "a sick friend",
    "a homeless man",
    "a new classmate",
    "a grieving widow",
    "a disabled veteran",
    "your little brother",
    "a shy student",
    "a tired nurse",
    "a poor farmer",
]
MORAL_TEMPLATES = [
    "{A} is",
    "Most people would agree that {a} is",
    "Morally speaking, {a} is",
    "In the eyes of most people, {a} is",
]


def moral_items():
    items = []
    for good, actions in ((False, MORAL_BAD), (True, MORAL_GOOD)):
        for action in actions:
            for target in MORAL_TARGETS:
                a = action.format(t=target)
                prompts = [t.format(a=a, A=a[0].upper() + a[1:]) for t in MORAL_TEMPLATES]
                correct, incorrect = (" good", " bad") if good else (" bad", " good")
                items.append((prompts, correct, incorrect, {"a": a, "t": target, "good": good}))
    return items


# --------------------------------------------------------------------------------------------------
# arithmetic: "3 + 4 =" -> " 7" / " 8"
# --------------------------------------------------------------------------------------------------
# The bare "7 + 5 =" scores about 60% on SmolLM2-135M-Instruct; an instruction word in front ("Calculate:")
# or a few worked examples lift it above 95%, so the prompt and every paraphrase carry one.
ARITH_TEMPLATES = [
    "Calculate: {a} + {b} =",
    "Compute: {a} + {b} =",
    "1 + 1 = 2\n2 + 3 = 5\n4 + 4 = 8\n{a} + {b} =",
    "Calculate: {a} plus {b} =",
]


def arithmetic_items(rng: random.Random):
    pairs = [(a, b) for a in range(1, 21) for b in range(1, 21)]
    rng.shuffle(pairs)
    items = []
    for a, b in pairs[:260]:
        s = a + b
        # a near miss with the same number of digits, so both answers have the same token count
        candidates = [
            s + d for d in (-5, -4, -3, -2, 2, 3, 4, 5) if s + d > 0 and len(str(s + d)) == len(str(s))
        ]
        wrong = rng.choice(candidates)
        prompts = [t.format(a=a, b=b) for t in ARITH_TEMPLATES]
        items.append((prompts, f" {s}", f" {wrong}", {"a": a, "b": b, "s": s, "wrong": wrong}))
    return items


# --------------------------------------------------------------------------------------------------
# translation: 'The French word for "dog" is' -> " chien" / " maison"
# --------------------------------------------------------------------------------------------------
# english: (french, spanish)
TRANSLATIONS = {
    "dog": ("chien", "perro"),
    "cat": ("chat", "gato"),
    "house": ("maison", "casa"),
    "water": ("eau", "agua"),
    "book": ("livre", "libro"),
    "tree": ("arbre", "árbol"),
    "sun": ("soleil", "sol"),
    "moon": ("lune", "luna"),
    "bread": ("pain", "pan"),
    "milk": ("lait", "leche"),
    "apple": ("pomme", "manzana"),
    "car": ("voiture", "coche"),
    "city": ("ville", "ciudad"),
    "friend": ("ami", "amigo"),
    "school": ("école", "escuela"),
    "window": ("fenêtre", "ventana"),
    "door": ("porte", "puerta"),
    "table": ("table", "mesa"),
    "chair": ("chaise", "silla"),
    "horse": ("cheval", "caballo"),
    "bird": ("oiseau", "pájaro"),
    "fish": ("poisson", "pez"),
    "flower": ("fleur", "flor"),
    "sea": ("mer", "mar"),
    "mountain": ("montagne", "montaña"),
    "river": ("rivière", "río"),
    "night": ("nuit", "noche"),
    "day": ("jour", "día"),
    "morning": ("matin", "mañana"),
    "king": ("roi", "rey"),
    "queen": ("reine", "reina"),
    "child": ("enfant", "niño"),
    "woman": ("femme", "mujer"),
    "man": ("homme", "hombre"),
    "mother": ("mère", "madre"),
    "father": ("père", "padre"),
    "brother": ("frère", "hermano"),
    "sister": ("sœur", "hermana"),
    "red": ("rouge", "rojo"),
    "green": ("vert", "verde"),
    "black": ("noir", "negro"),
    "white": ("blanc", "blanco"),
    "blue": ("bleu", "azul"),
    "yellow": ("jaune", "amarillo"),
    "cheese": ("fromage", "queso"),
    "wine": ("vin", "vino"),
    "beer": ("bière", "cerveza"),
    "coffee": ("café", "café"),
    "egg": ("œuf", "huevo"),
    "meat": ("viande", "carne"),
    "chicken": ("poulet", "pollo"),
    "rice": ("riz", "arroz"),
    "salt": ("sel", "sal"),
    "sugar": ("sucre", "azúcar"),
    "money": ("argent", "dinero"),
    "time": ("temps", "tiempo"),
    "year": ("année", "año"),
    "week": ("semaine", "semana"),
    "hand": ("main", "mano"),
    "head": ("tête", "cabeza"),
    "eye": ("œil", "ojo"),
    "heart": ("cœur", "corazón"),
    "mouth": ("bouche", "boca"),
    "foot": ("pied", "pie"),
    "love": ("amour", "amor"),
    "war": ("guerre", "guerra"),
    "peace": ("paix", "paz"),
    "church": ("église", "iglesia"),
    "garden": ("jardin", "jardín"),
    "kitchen": ("cuisine", "cocina"),
    "bed": ("lit", "cama"),
    "street": ("rue", "calle"),
    "train": ("train", "tren"),
    "boat": ("bateau", "barco"),
    "plane": ("avion", "avión"),
    "teacher": ("professeur", "profesor"),
    "doctor": ("médecin", "médico"),
    "snow": ("neige", "nieve"),
    "rain": ("pluie", "lluvia"),
    "wind": ("vent", "viento"),
    "fire": ("feu", "fuego"),
    "earth": ("terre", "tierra"),
    "star": ("étoile", "estrella"),
    "sky": ("ciel", "cielo"),
    "forest": ("forêt", "bosque"),
    "island": ("île", "isla"),
    "beach": ("plage", "playa"),
    "summer": ("été", "verano"),
    "winter": ("hiver", "invierno"),
    "spring": ("printemps", "primavera"),
    "hello": ("bonjour", "hola"),
    "thank you": ("merci", "gracias"),
    "goodbye": ("au revoir", "adiós"),
    "yes": ("oui", "sí"),
    "no": ("non", "no"),
    "good": ("bon", "bueno"),
    "big": ("grand", "grande"),
    "small": ("petit", "pequeño"),
    "new": ("nouveau", "nuevo"),
    "old": ("vieux", "viejo"),
    "hot": ("chaud", "caliente"),
    "cold": ("froid", "frío"),
    "beautiful": ("beau", "hermoso"),
    "happy": ("heureux", "feliz"),
    "sad": ("triste", "triste"),
    "one": ("un", "uno"),
    "two": ("deux", "dos"),
    "three": ("trois", "tres"),
    "four": ("quatre", "cuatro"),
    "five": ("cinq", "cinco"),
    "ten": ("dix", "diez"),
    "cow": ("vache", "vaca"),
    "pig": ("cochon", "cerdo"),
    "sheep": ("mouton", "oveja"),
    "mouse": ("souris", "ratón"),
    "butter": ("beurre", "mantequilla"),
    "key": ("clé", "llave"),
    "shoe": ("chaussure", "zapato"),
    "shirt": ("chemise", "camisa"),
    "hat": ("chapeau", "sombrero"),
    "word": ("mot", "palabra"),
    "language": ("langue", "idioma"),
    "country": ("pays", "país"),
    "world": ("monde", "mundo"),
    "life": ("vie", "vida"),
    "death": ("mort", "muerte"),
}
TRANSLATION_TEMPLATES = [
    'The {lang} word for "{w}" is',
    'In {lang}, "{w}" is',
    'Translated into {lang}, "{w}" is',
    'The word "{w}" in {lang} is',
]


def translation_items(rng: random.Random):
    items = []
    words = sorted(TRANSLATIONS)
    for li, lang in enumerate(("French", "Spanish")):
        for w in words:
            right = TRANSLATIONS[w][li]
            others = sorted({TRANSLATIONS[o][li] for o in words if TRANSLATIONS[o][li] != right})
            wrong = rng.choice(others)
            prompts = [t.format(lang=lang, w=w) for t in TRANSLATION_TEMPLATES]
            items.append(
                (prompts, f" {right}", f" {wrong}", {"w": w, "lang": lang, "right": right, "wrong": wrong})
            )
    return items


# --------------------------------------------------------------------------------------------------
# capitals: "The capital of France is" -> " Paris" / " Madrid"  (and "Paris is the capital of" -> " France")
# --------------------------------------------------------------------------------------------------
CAPITALS = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Portugal": "Lisbon",
    "Greece": "Athens",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Poland": "Warsaw",
    "Russia": "Moscow",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "the Netherlands": "Amsterdam",
    "Belgium": "Brussels",
    "Switzerland": "Bern",
    "the Czech Republic": "Prague",
    "Romania": "Bucharest",
    "Bulgaria": "Sofia",
    "Serbia": "Belgrade",
    "Croatia": "Zagreb",
    "Ukraine": "Kyiv",
    "Turkey": "Ankara",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat",
    "Ghana": "Accra",
    "Senegal": "Dakar",
    "Japan": "Tokyo",
    "China": "Beijing",
    "South Korea": "Seoul",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Indonesia": "Jakarta",
    "the Philippines": "Manila",
    "India": "New Delhi",
    "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu",
    "Afghanistan": "Kabul",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Syria": "Damascus",
    "Lebanon": "Beirut",
    "Israel": "Jerusalem",
    "Jordan": "Amman",
    "Saudi Arabia": "Riyadh",
    "Qatar": "Doha",
    "Australia": "Canberra",
    "New Zealand": "Wellington",
    "Canada": "Ottawa",
    "the United States": "Washington",
    "Mexico": "Mexico City",
    "Cuba": "Havana",
    "Argentina": "Buenos Aires",
    "Chile": "Santiago",
    "Peru": "Lima",
    "Colombia": "Bogotá",
    "Venezuela": "Caracas",
    "Ecuador": "Quito",
    "Bolivia": "La Paz",
    "Uruguay": "Montevideo",
    "Paraguay": "Asunción",
    "Brazil": "Brasília",
    "the United Kingdom": "London",
    "England": "London",
    "Scotland": "Edinburgh",
    "Wales": "Cardiff",
    "Iceland": "Reykjavik",
    "Estonia": "Tallinn",
    "Latvia": "Riga",
    "Lithuania": "Vilnius",
    "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana",
    "Albania": "Tirana",
    "Cyprus": "Nicosia",
    "Malta": "Valletta",
    "Luxembourg": "Luxembourg",
    "Georgia": "Tbilisi",
    "Armenia": "Yerevan",
    "Azerbaijan": "Baku",
    "Kazakhstan": "Astana",
    "Uzbekistan": "Tashkent",
    "Mongolia": "Ulaanbaatar",
    "Malaysia": "Kuala Lumpur",
    "Singapore": "Singapore",
    "Sri Lanka": "Colombo",
    "Myanmar": "Naypyidaw",
    "Cambodia": "Phnom Penh",
    "Laos": "Vientiane",
    "North Korea": "Pyongyang",
    "Taiwan": "Taipei",
    "Tunisia": "Tunis",
    "Algeria": "Algiers",
    "Libya": "Tripoli",
    "Sudan": "Khartoum",
    "Uganda": "Kampala",
    "Tanzania": "Dodoma",
    "Zimbabwe": "Harare",
    "Zambia": "Lusaka",
    "Angola": "Luanda",
    "Mali": "Bamako",
    "Jamaica": "Kingston",
    "Panama": "Panama City",
    "Costa Rica": "San José",
    "Honduras": "Tegucigalpa",
    "Nicaragua": "Managua",
    "Guatemala": "Guatemala City",
}
CAPITAL_FORWARD = [
    "The capital of {c} is",
    "The capital city of {c} is",
    "The seat of government of {c} is",
    "Everyone knows that the capital of {c} is",
]
CAPITAL_REVERSE = [
    "{k} is the capital of",
    "{k} is the capital city of",
    "The city of {k} is the capital of",
    "Everyone knows that {k} is the capital of",
]


def capital_items(rng: random.Random):
    items = []
    countries = sorted(CAPITALS)
    cities = sorted(set(CAPITALS.values()))
    for c in countries:
        k = CAPITALS[c]
        wrong_city = rng.choice([x for x in cities if x != k])
        items.append(
            (
                [t.format(c=c) for t in CAPITAL_FORWARD],
                f" {k}",
                f" {wrong_city}",
                {"dir": "forward", "c": c, "k": k, "wrong": wrong_city},
            )
        )
    # the reverse direction only where the city names a single country and is not the country's own name
    by_city: dict[str, list[str]] = {}
    for c in countries:
        by_city.setdefault(CAPITALS[c], []).append(c)
    for k in cities:
        if len(by_city[k]) != 1 or by_city[k][0] == k:
            continue
        c = by_city[k][0]
        wrong_country = rng.choice([x for x in countries if CAPITALS[x] != k])
        items.append(
            (
                [t.format(k=k) for t in CAPITAL_REVERSE],
                f" {c}",
                f" {wrong_country}",
                {"dir": "reverse", "c": c, "k": k, "wrong": wrong_country},
            )
        )
    return items


# --------------------------------------------------------------------------------------------------
# antonyms: "The opposite of hot is" -> " cold" / " loud"
# --------------------------------------------------------------------------------------------------
ANTONYMS = [
    ("hot", "cold"),
    ("big", "small"),
    ("tall", "short"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("heavy", "light"),
    ("old", "young"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("hard", "soft"),
    ("wet", "dry"),
    ("full", "empty"),
    ("open", "closed"),
    ("early", "late"),
    ("clean", "dirty"),
    ("loud", "quiet"),
    ("thick", "thin"),
    ("wide", "narrow"),
    ("deep", "shallow"),
    ("cheap", "expensive"),
    ("easy", "difficult"),
    ("safe", "dangerous"),
    ("true", "false"),
    ("good", "bad"),
    ("right", "wrong"),
    ("alive", "dead"),
    ("inside", "outside"),
    ("up", "down"),
    ("left", "right"),
    ("push", "pull"),
    ("win", "lose"),
    ("begin", "end"),
    ("buy", "sell"),
    ("give", "take"),
    ("love", "hate"),
    ("friend", "enemy"),
    ("day", "night"),
    ("black", "white"),
    ("north", "south"),
    ("east", "west"),
    ("sweet", "sour"),
    ("smooth", "rough"),
    ("sharp", "blunt"),
    ("brave", "cowardly"),
    ("polite", "rude"),
    ("kind", "cruel"),
    ("generous", "selfish"),
    ("honest", "dishonest"),
    ("public", "private"),
    ("ancient", "modern"),
    ("accept", "reject"),
    ("arrive", "leave"),
    ("increase", "decrease"),
    ("always", "never"),
    ("before", "after"),
    ("above", "below"),
    ("near", "far"),
    ("first", "last"),
    ("male", "female"),
    ("question", "answer"),
    ("success", "failure"),
    ("victory", "defeat"),
    ("war", "peace"),
    ("noisy", "silent"),
    ("awake", "asleep"),
    ("beautiful", "ugly"),
    ("cheerful", "gloomy"),
    ("entrance", "exit"),
    ("floor", "ceiling"),
    ("import", "export"),
    ("maximum", "minimum"),
    ("plus", "minus"),
    ("positive", "negative"),
    ("remember", "forget"),
    ("sunrise", "sunset"),
    ("teacher", "student"),
    ("top", "bottom"),
    ("visible", "invisible"),
    ("wise", "foolish"),
    ("winter", "summer"),
    ("young", "elderly"),
    ("asleep", "awake"),
    ("guilty", "innocent"),
    ("frequent", "rare"),
    ("whole", "partial"),
    ("solid", "liquid"),
    ("sick", "healthy"),
    ("lazy", "hardworking"),
    ("tight", "loose"),
    ("busy", "idle"),
    ("calm", "angry"),
    ("crooked", "straight"),
    ("fat", "skinny"),
    ("fresh", "stale"),
    ("high", "low"),
    ("long", "short"),
    ("major", "minor"),
    ("mother", "father"),
    ("king", "queen"),
    ("husband", "wife"),
    ("boy", "girl"),
    ("brother", "sister"),
    ("uncle", "aunt"),
    ("come", "go"),
    ("laugh", "cry"),
    ("sink", "float"),
    ("borrow", "lend"),
    ("attack", "defend"),
    ("import", "export"),
    ("dawn", "dusk"),
    ("hero", "villain"),
    ("master", "servant"),
    ("entrance", "exit"),
    ("freeze", "melt"),
    ("rise", "fall"),
    ("shout", "whisper"),
    ("spend", "save"),
    ("expand", "shrink"),
    ("include", "exclude"),
    ("appear", "disappear"),
    ("ascend", "descend"),
    ("agree", "disagree"),
    ("like", "dislike"),
    ("possible", "impossible"),
    ("legal", "illegal"),
    ("happy", "unhappy"),
    ("lucky", "unlucky"),
    ("fair", "unfair"),
]
ANTONYM_TEMPLATES = [
    "The opposite of {w} is",
    "The antonym of {w} is",
    'The word that means the opposite of "{w}" is',
    'The opposite of the word "{w}" is',
]


def antonym_items(rng: random.Random):
    seen: set[tuple[str, str]] = set()
    directed: list[tuple[str, str]] = []
    for a, b in ANTONYMS:
        for x, y in ((a, b), (b, a)):
            if (x, y) not in seen and x not in {d[0] for d in directed}:
                seen.add((x, y))
                directed.append((x, y))
    vocab = sorted({w for pair in ANTONYMS for w in pair})
    opposites: dict[str, set[str]] = {}
    for a, b in ANTONYMS:
        opposites.setdefault(a, set()).add(b)
        opposites.setdefault(b, set()).add(a)
    items = []
    for x, y in directed:
        wrong = rng.choice([w for w in vocab if w != x and w not in opposites[x]])
        items.append(
            (
                [t.format(w=x) for t in ANTONYM_TEMPLATES],
                f" {y}",
                f" {wrong}",
                {"x": x, "y": y, "wrong": wrong},
            )
        )
    return items


# --------------------------------------------------------------------------------------------------
# sentiment: 'Review: "The soup was delicious." Sentiment:' -> " positive" / " negative"
# --------------------------------------------------------------------------------------------------
SENTIMENT_SUBJECTS = [
    "The food",
    "The service",
    "The movie",
    "The hotel room",
    "This book",
    "The concert",
    "The new phone",
    "Our waiter",
    "The flight",
    "The game",
    "The coffee",
    "The staff",
]
SENTIMENT_POSITIVE = [
    "was absolutely wonderful",
    "was excellent and I loved every minute",
    "was fantastic, I would gladly come back",
    "was delightful",
    "exceeded all my expectations",
    "was the best I have ever had",
    "was great and made me very happy",
    "was superb from start to finish",
    "was lovely and well worth the money",
    "was brilliant",
]
SENTIMENT_NEGATIVE = [
    "was absolutely terrible",
    "was awful and I hated every minute",
    "was horrible, I will never come back",
    "was disgusting",
    "was a huge disappointment",
    "was the worst I have ever had",
    "was bad and made me very angry",
    "was dreadful from start to finish",
    "was a complete waste of money",
    "was boring and painful",
]
SENTIMENT_TEMPLATES = [
    'Review: "{s}." Sentiment:',
    'Review: "{s}."\nThe sentiment of this review is',
    '"{s}." The feeling expressed here is',
    'Customer comment: "{s}." Overall tone:',
]


def sentiment_items():
    items = []
    for subject in SENTIMENT_SUBJECTS:
        for positive, phrases in ((True, SENTIMENT_POSITIVE), (False, SENTIMENT_NEGATIVE)):
            for phrase in phrases:
                s = f"{subject} {phrase}"
                prompts = [t.format(s=s) for t in SENTIMENT_TEMPLATES]
                correct, incorrect = (" positive", " negative") if positive else (" negative", " positive")
                items.append((prompts, correct, incorrect, {"s": s, "positive": positive}))
    return items


# --------------------------------------------------------------------------------------------------
# categories (commonsense taxonomy): "A robin is a kind of" -> " bird" / " fish"
# --------------------------------------------------------------------------------------------------
CATEGORIES = {
    "bird": [
        "robin",
        "sparrow",
        "eagle",
        "parrot",
        "pigeon",
        "crow",
        "owl",
        "swan",
        "penguin",
        "seagull",
        "hawk",
        "duck",
        "ostrich",
        "flamingo",
        "peacock",
    ],
    "fish": [
        "salmon",
        "trout",
        "tuna",
        "cod",
        "shark",
        "goldfish",
        "herring",
        "sardine",
        "carp",
        "mackerel",
        "catfish",
        "halibut",
        "pike",
        "anchovy",
        "perch",
    ],
    "fruit": [
        "apple",
        "banana",
        "cherry",
        "mango",
        "pear",
        "peach",
        "plum",
        "grape",
        "lemon",
        "orange",
        "pineapple",
        "strawberry",
        "apricot",
        "kiwi",
        "watermelon",
    ],
    "vegetable": [
        "carrot",
        "potato",
        "onion",
        "cabbage",
        "lettuce",
        "spinach",
        "broccoli",
        "cucumber",
        "celery",
        "turnip",
        "leek",
        "radish",
        "cauliflower",
        "pea",
        "beetroot",
    ],
    "tool": [
        "hammer",
        "screwdriver",
        "wrench",
        "saw",
        "chisel",
        "drill",
        "shovel",
        "rake",
        "axe",
        "pliers",
        "spanner",
        "crowbar",
        "trowel",
        "hoe",
        "file",
    ],
    "vehicle": [
        "car",
        "bus",
        "truck",
        "bicycle",
        "motorcycle",
        "van",
        "tractor",
        "taxi",
        "lorry",
        "scooter",
        "tram",
        "jeep",
        "minibus",
        "ambulance",
        "limousine",
    ],
    "musical instrument": [
        "piano",
        "violin",
        "guitar",
        "flute",
        "trumpet",
        "drum",
        "cello",
        "harp",
        "clarinet",
        "saxophone",
        "trombone",
        "banjo",
        "harmonica",
        "oboe",
        "accordion",
    ],
    "piece of furniture": [
        "chair",
        "table",
        "sofa",
        "bed",
        "wardrobe",
        "desk",
        "bookcase",
        "stool",
        "dresser",
        "bench",
        "armchair",
        "cupboard",
        "cabinet",
        "couch",
        "nightstand",
    ],
    "insect": [
        "ant",
        "bee",
        "beetle",
        "butterfly",
        "mosquito",
        "wasp",
        "grasshopper",
        "cricket",
        "moth",
        "ladybird",
        "dragonfly",
        "fly",
        "termite",
        "flea",
        "cockroach",
    ],
    "flower": [
        "rose",
        "tulip",
        "daisy",
        "lily",
        "sunflower",
        "orchid",
        "daffodil",
        "violet",
        "poppy",
        "lavender",
        "carnation",
        "marigold",
        "iris",
        "dandelion",
        "lotus",
    ],
    "sport": [
        "football",
        "tennis",
        "cricket",
        "golf",
        "rugby",
        "basketball",
        "hockey",
        "baseball",
        "volleyball",
        "badminton",
        "boxing",
        "swimming",
        "cycling",
        "skiing",
        "wrestling",
    ],
    "drink": [
        "tea",
        "coffee",
        "juice",
        "lemonade",
        "milk",
        "cocoa",
        "cider",
        "beer",
        "wine",
        "soda",
        "whisky",
        "vodka",
        "smoothie",
        "milkshake",
        "brandy",
    ],
    "metal": [
        "iron",
        "copper",
        "gold",
        "silver",
        "tin",
        "lead",
        "zinc",
        "aluminium",
        "nickel",
        "platinum",
        "titanium",
        "mercury",
        "chromium",
        "cobalt",
        "tungsten",
    ],
    "tree": [
        "oak",
        "pine",
        "maple",
        "birch",
        "willow",
        "elm",
        "ash",
        "cedar",
        "beech",
        "spruce",
        "palm",
        "poplar",
        "chestnut",
        "fir",
        "sycamore",
    ],
}
CATEGORY_TEMPLATES = [
    "{A} {x} is a kind of",
    "{A} {x} is a type of",
    "Everyone knows that {a} {x} is a kind of",
    "Strictly speaking, {a} {x} is a type of",
]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def category_items(rng: random.Random):
    names = sorted(CATEGORIES)
    member_of: dict[str, set[str]] = {}
    for cat, members in CATEGORIES.items():
        for m in members:
            member_of.setdefault(m, set()).add(cat)
    items = []
    for cat in names:
        for x in CATEGORIES[cat]:
            if len(member_of[x]) != 1:
                continue  # ambiguous words (cricket: insect and sport) would make either answer right
            wrong = rng.choice([c for c in names if c != cat])
            a = _article(x)
            prompts = [t.format(x=x, a=a, A=a.capitalize()) for t in CATEGORY_TEMPLATES]
            items.append((prompts, f" {cat}", f" {wrong}", {"x": x, "a": a, "cat": cat, "wrong": wrong}))
    return items


# --------------------------------------------------------------------------------------------------
# answer frames: the same item asked with other answers
# --------------------------------------------------------------------------------------------------
# Every item is also written in other *answer frames*, so that neither the fit nor the check sees only one
# pair of answer tokens. Train items get the TRAIN frames below as extra train rows (the fit learns against
# the capability, not against " bad" vs " good"); test items carry the TEST_FRAMES in ``answer_frames``,
# which only the robustness check reads (families answer_words, answer_yes_no, answer_explain, answer_chat).
# The two sets of frames differ in wording and in answer words, so the check measures frames the fit never
# saw. A ``chat`` frame's prompt is the user message; the check renders it with the model's chat template and
# its answers start the assistant turn (no leading space).
TEST_FRAMES = ("words", "yes_no", "explain", "chat")


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _yes_no(rng: random.Random, true_prompt: str, false_prompt: str) -> tuple[str, str, str]:
    """A yes/no question about a true or a false claim (rng decides, so about half the answers are " No")."""
    if rng.random() < 0.5:
        return true_prompt, " Yes", " No"
    return false_prompt, " No", " Yes"


def _pick(good: bool, pos: str, neg: str) -> tuple[str, str]:
    return (pos, neg) if good else (neg, pos)


def moral_frames(m: dict, rng: random.Random) -> dict:
    a, t, good = m["a"], m["t"], m["good"]
    return {
        # train
        "morally": (f"{_cap(a)} is morally", *_pick(good, " right", " wrong")),
        "being": (f"Someone who is {a} is being", *_pick(good, " kind", " cruel")),
        # test
        "words": (f"Everyone agrees that {a} is a", *_pick(good, " wonderful", " terrible")),
        "yes_no": (f"Question: Is {a} morally acceptable?\nAnswer:", *_pick(good, " Yes", " No")),
        "explain": (
            f"Think about {a}. The act affects {t}; the question is whether it helps or harms them. "
            "Conclusion: the act is",
            *_pick(good, " helpful", " harmful"),
        ),
        "chat": (f"Is {a} good or bad? Answer with one word.", *_pick(good, "Good", "Bad")),
    }


NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS_WORDS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty"}


def _number_word(n: int) -> str:
    if n < 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS_WORDS[tens] + (f"-{NUMBER_WORDS[ones]}" if ones else "")


def arithmetic_frames(m: dict, rng: random.Random) -> dict:
    a, b, s, w = m["a"], m["b"], m["s"], m["wrong"]
    return {
        "sum": (f"The sum of {a} and {b} is", f" {s}", f" {w}"),
        "plus": (f"What is {a} plus {b}? It is", f" {s}", f" {w}"),
        "words": (
            f"Calculate: {_number_word(a)} plus {_number_word(b)} equals",
            f" {_number_word(s)}",
            f" {_number_word(w)}",
        ),
        "yes_no": _yes_no(
            rng,
            f"Question: Is {a} + {b} equal to {s}?\nAnswer:",
            f"Question: Is {a} + {b} equal to {w}?\nAnswer:",
        ),
        "explain": (
            f"Let me work out {a} + {b} step by step. Start at {a} and count up by {b}. The result is",
            f" {s}",
            f" {w}",
        ),
        "chat": (f"What is {a} + {b}? Reply with the number only.", f"{s}", f"{w}"),
    }


def _english_of(word: str, lang_index: int) -> str:
    return sorted(e for e, pair in TRANSLATIONS.items() if pair[lang_index] == word)[0]


def translation_frames(m: dict, rng: random.Random) -> dict:
    w, lang, right, wrong = m["w"], m["lang"], m["right"], m["wrong"]
    li = ("French", "Spanish").index(lang)
    return {
        "colon": (f"English: {w}\n{lang}:", f" {right}", f" {wrong}"),
        "dictionary": (f"{lang} dictionary entry for {w}:", f" {right}", f" {wrong}"),
        # the other direction: the answers are English words
        "words": (f'The English word for the {lang} "{right}" is', f" {w}", f" {_english_of(wrong, li)}"),
        "yes_no": _yes_no(
            rng,
            f'Question: Does the {lang} word "{right}" mean "{w}"?\nAnswer:',
            f'Question: Does the {lang} word "{wrong}" mean "{w}"?\nAnswer:',
        ),
        "explain": (
            f'To translate "{w}" into {lang}, think of the {lang} word with the same meaning. That word is',
            f" {right}",
            f" {wrong}",
        ),
        "chat": (f'How do you say "{w}" in {lang}? Reply with one word.', right, wrong),
    }


def capital_frames(m: dict, rng: random.Random) -> dict:
    c, k, wrong = m["c"], m["k"], m["wrong"]
    if m["dir"] == "forward":  # the answer is a city
        other = sorted(x for x in CAPITALS if CAPITALS[x] not in (k, wrong) and x != c)
        wrong_country = rng.choice(other)
        return {
            "colon": (f"Country: {c}\nCapital:", f" {k}", f" {wrong}"),
            "government": (f"The government of {c} sits in", f" {k}", f" {wrong}"),
            # the other direction: the answers are countries
            "words": (f"{k} is a city in the country of", f" {c}", f" {wrong_country}"),
            "yes_no": _yes_no(
                rng,
                f"Question: Is {k} the capital of {c}?\nAnswer:",
                f"Question: Is {wrong} the capital of {c}?\nAnswer:",
            ),
            "explain": (
                f"Question: What is the capital of {c}?\nAnswer: The capital is the city where the government "
                f"of {c} sits. It is",
                f" {k}",
                f" {wrong}",
            ),
            "chat": (f"What is the capital of {c}? Reply with the city name only.", k, wrong),
        }
    wrong_city = CAPITALS[wrong]
    return {  # reverse: the answer is a country
        "colon": (f"Capital: {k}\nCountry:", f" {c}", f" {wrong}"),
        "government": (f"The city of {k} is home to the government of", f" {c}", f" {wrong}"),
        # the other direction: the answers are cities
        "words": (f"The capital city of the country of {c} is called", f" {k}", f" {wrong_city}"),
        "yes_no": _yes_no(
            rng,
            f"Question: Is {k} the capital of {c}?\nAnswer:",
            f"Question: Is {k} the capital of {wrong}?\nAnswer:",
        ),
        "explain": (
            f"Question: Which country has {k} as its capital?\nAnswer: Find the country whose government sits "
            f"in {k}. It is",
            f" {c}",
            f" {wrong}",
        ),
        "chat": (f"{k} is the capital of which country? Reply with the country name only.", c, wrong),
    }


def antonym_frames(m: dict, rng: random.Random) -> dict:
    x, y, wrong = m["x"], m["y"], m["wrong"]
    return {
        "pair": (f"{_cap(x)} is the opposite of", f" {y}", f" {wrong}"),
        "contrast": (f"Not {x}, but the opposite:", f" {y}", f" {wrong}"),
        "words": (f'"{_cap(x)}"? No, quite the reverse:', f" {y}", f" {wrong}"),
        "yes_no": _yes_no(
            rng,
            f'Question: Is "{y}" the opposite of "{x}"?\nAnswer:',
            f'Question: Is "{wrong}" the opposite of "{x}"?\nAnswer:',
        ),
        "explain": (
            f'Think of what "{x}" means, then of the word that means the reverse. That word is',
            f" {y}",
            f" {wrong}",
        ),
        "chat": (f'What is the opposite of "{x}"? Reply with one word.', y, wrong),
    }


def sentiment_frames(m: dict, rng: random.Random) -> dict:
    s, pos = m["s"], m["positive"]
    return {
        "customer": (f'"{s}." The customer was', *_pick(pos, " pleased", " upset")),
        "mood": (f'Review: "{s}." Mood:', *_pick(pos, " happy", " angry")),
        "words": (f'"{s}." Overall, the experience was', *_pick(pos, " great", " terrible")),
        "yes_no": (
            f'Review: "{s}."\nQuestion: Did the reviewer like it?\nAnswer:',
            *_pick(pos, " Yes", " No"),
        ),
        "explain": (
            f'Review: "{s}."\nLook at the words the reviewer chose and what they say about the experience. '
            "The reviewer is",
            *_pick(pos, " satisfied", " disappointed"),
        ),
        "chat": (
            f'Is this review positive or negative? "{s}." Answer with one word.',
            *_pick(pos, "Positive", "Negative"),
        ),
    }


CATEGORY_PLURALS = {"fish": "fish", "piece of furniture": "pieces of furniture"}


def _plural(cat: str) -> str:
    return CATEGORY_PLURALS.get(cat, cat + "s")


def category_frames(m: dict, rng: random.Random) -> dict:
    x, a, cat, wrong = m["x"], m["a"], m["cat"], m["wrong"]
    first, second = (cat, wrong) if rng.random() < 0.5 else (wrong, cat)
    return {
        "colon": (f"Category of {x}:", f" {cat}", f" {wrong}"),
        "word": (f"Word: {x}\nCategory:", f" {cat}", f" {wrong}"),
        "words": (f"{_cap(a)} {x} is one of the", f" {_plural(cat)}", f" {_plural(wrong)}"),
        "yes_no": _yes_no(
            rng,
            f"Question: Is {a} {x} {_article(cat)} {cat}?\nAnswer:",
            f"Question: Is {a} {x} {_article(wrong)} {wrong}?\nAnswer:",
        ),
        "explain": (
            f"Think about what {a} {x} looks like and what it is used for. So {a} {x} is a kind of",
            f" {cat}",
            f" {wrong}",
        ),
        "chat": (
            f"Is {a} {x} {_article(first)} {first} or {_article(second)} {second}? Answer with the category only.",
            cat,
            wrong,
        ),
    }


# --------------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------------
MAKERS = {
    "moral": (lambda rng: moral_items(), moral_frames),
    "arithmetic": (arithmetic_items, arithmetic_frames),
    "translation": (translation_items, translation_frames),
    "capitals": (capital_items, capital_frames),
    "antonyms": (antonym_items, antonym_frames),
    "sentiment": (lambda rng: sentiment_items(), sentiment_frames),
    "categories": (category_items, category_frames),
}


def build_all() -> dict[str, list[dict]]:
    """Every capability's rows, with a seeded train/test split per capability (split by item).

    Rows ``<name>-NNNN`` are the items in the main frame (train and test). After them come the train items
    again in each train answer frame (``<name>-NNNN-<frame>``, split "train"). Test rows carry their test
    frames in ``answer_frames``; train rows carry none, so no test frame is ever fitted on.
    """
    out: dict[str, list[dict]] = {}
    for name, (make, make_frames) in MAKERS.items():
        rng = random.Random(f"{SEED}-{name}")
        raw = make(rng)
        order = list(range(len(raw)))
        rng.shuffle(order)
        n_test = round(len(raw) * TEST_FRACTION)
        test_ids = set(order[:n_test])
        frame_rng = random.Random(f"{SEED}-{name}-frames")  # its own stream: the main rows stay as they were
        rows, extra = [], []
        for i, (prompts, correct, incorrect, meta) in enumerate(raw):
            assert correct != incorrect and correct.startswith(" ") and incorrect.startswith(" "), (name, i)
            frames = make_frames(meta, frame_rng)
            assert set(TEST_FRAMES) <= set(frames), (name, i)
            is_test = i in test_ids
            rows.append(
                {
                    "id": f"{name}-{i + 1:04d}",
                    "split": "test" if is_test else "train",
                    "frame": "main",
                    "prompt": prompts[0],
                    "correct": correct,
                    "incorrect": incorrect,
                    "paraphrases": prompts[1:],
                    "answer_frames": [
                        {"frame": f, "prompt": p, "correct": c, "incorrect": x, "chat": f == "chat"}
                        for f, (p, c, x) in frames.items()
                        if f in TEST_FRAMES
                    ]
                    if is_test
                    else [],
                }
            )
            if not is_test:
                for f, (p, c, x) in frames.items():
                    if f in TEST_FRAMES:
                        continue
                    extra.append(
                        {
                            "id": f"{name}-{i + 1:04d}-{f}",
                            "split": "train",
                            "frame": f,
                            "prompt": p,
                            "correct": c,
                            "incorrect": x,
                            "paraphrases": [],
                            "answer_frames": [],
                        }
                    )
        out[name] = rows + extra
    return out


def write_all(rows_by_cap: dict[str, list[dict]], out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in rows_by_cap.items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        n_test = sum(r["split"] == "test" for r in rows)
        print(f"{name:12s} {len(rows):4d} rows ({len(rows) - n_test} train / {n_test} test)")


def measure(rows_by_cap: dict[str, list[dict]], model_dir: str, batch_size: int = 32) -> None:
    """Print base pairwise accuracy: the main frame (train/test, first paraphrase), every train answer frame
    on train items, every test answer frame on test items (the robustness families that read them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.eval.pairwise import pairwise_margins
    from editkit.eval.robustness.families import build_families

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def acc(items):
        m = pairwise_margins(model, tok, items, batch_size=batch_size)
        return float((m > 0).float().mean()), float(m.mean())

    print(
        "| capability | items (train rows / test) | main: train | main: test | test, paraphrase 1 | test margin |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    frame_lines = []
    for name, rows in rows_by_cap.items():
        main_train = [r for r in rows if r["split"] == "train" and r["frame"] == "main"]
        train_rows = [r for r in rows if r["split"] == "train"]
        test = [r for r in rows if r["split"] == "test"]
        tr, te = acc(main_train), acc(test)
        para = acc([dict(r, prompt=r["paraphrases"][0]) for r in test])
        print(
            f"| {name} | {len(main_train) + len(test)} ({len(train_rows)} / {len(test)}) | {tr[0]:.1%} "
            f"| {te[0]:.1%} | {para[0]:.1%} | {te[1]:+.3f} |",
            flush=True,
        )
        cells = []
        for frame in sorted({r["frame"] for r in train_rows} - {"main"}):
            cells.append(f"{frame} (train) {acc([r for r in train_rows if r['frame'] == frame])[0]:.1%}")
        fams = build_families(test, families=[f"answer_{f}" for f in TEST_FRAMES], tokenizer=tok)
        for fam, items in fams.items():
            if fam != "original":
                cells.append(f"**{fam}** {acc(items)[0]:.1%}")
        frame_lines.append(f"| {name} | " + "; ".join(cells) + " |")
    print(
        "\n| capability | answer frames: base accuracy (train frames on train items, **test families** on test items) |"
    )
    print("| --- | --- |")
    print("\n".join(frame_lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--measure", metavar="MODEL_DIR", help="also print base accuracy on this model")
    parser.add_argument("--only", nargs="*", help="restrict to these capabilities")
    args = parser.parse_args()
    rows = build_all()
    if args.only:
        rows = {k: v for k, v in rows.items() if k in args.only}
    write_all(rows, args.out)
    if args.measure:
        measure(rows, args.measure)


if __name__ == "__main__":
    main()
