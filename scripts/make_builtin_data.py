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
                items.append((prompts, correct, incorrect))
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
        items.append((prompts, f" {s}", f" {wrong}"))
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
            items.append((prompts, f" {right}", f" {wrong}"))
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
        items.append(([t.format(c=c) for t in CAPITAL_FORWARD], f" {k}", f" {wrong_city}"))
    # the reverse direction only where the city names a single country and is not the country's own name
    by_city: dict[str, list[str]] = {}
    for c in countries:
        by_city.setdefault(CAPITALS[c], []).append(c)
    for k in cities:
        if len(by_city[k]) != 1 or by_city[k][0] == k:
            continue
        c = by_city[k][0]
        wrong_country = rng.choice([x for x in countries if CAPITALS[x] != k])
        items.append(([t.format(k=k) for t in CAPITAL_REVERSE], f" {c}", f" {wrong_country}"))
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
        items.append(([t.format(w=x) for t in ANTONYM_TEMPLATES], f" {y}", f" {wrong}"))
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
                items.append((prompts, correct, incorrect))
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
            items.append((prompts, f" {cat}", f" {wrong}"))
    return items


# --------------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------------
def build_all() -> dict[str, list[dict]]:
    """Every capability's rows, with a seeded train/test split per capability."""
    makers = {
        "moral": lambda rng: moral_items(),
        "arithmetic": arithmetic_items,
        "translation": translation_items,
        "capitals": capital_items,
        "antonyms": antonym_items,
        "sentiment": lambda rng: sentiment_items(),
        "categories": category_items,
    }
    out: dict[str, list[dict]] = {}
    for name, make in makers.items():
        rng = random.Random(f"{SEED}-{name}")
        raw = make(rng)
        order = list(range(len(raw)))
        rng.shuffle(order)
        n_test = round(len(raw) * TEST_FRACTION)
        test_ids = set(order[:n_test])
        rows = []
        for i, (prompts, correct, incorrect) in enumerate(raw):
            assert correct != incorrect and correct.startswith(" ") and incorrect.startswith(" "), (name, i)
            rows.append(
                {
                    "id": f"{name}-{i + 1:04d}",
                    "split": "test" if i in test_ids else "train",
                    "prompt": prompts[0],
                    "correct": correct,
                    "incorrect": incorrect,
                    "paraphrases": prompts[1:],
                }
            )
        out[name] = rows
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
    """Print base pairwise accuracy (train/test, and on the first paraphrase of test items)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.eval.pairwise import pairwise_margins

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    print("| capability | items | train acc | test acc | test acc (paraphrase 1) | test mean margin |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rows in rows_by_cap.items():
        res = {}
        for split in ("train", "test"):
            sub = [r for r in rows if r["split"] == split]
            m = pairwise_margins(model, tok, sub, batch_size=batch_size)
            res[split] = (float((m > 0).float().mean()), float(m.mean()))
        para = [dict(r, prompt=r["paraphrases"][0]) for r in rows if r["split"] == "test"]
        acc_p = float((pairwise_margins(model, tok, para, batch_size=batch_size) > 0).float().mean())
        print(
            f"| {name} | {len(rows)} | {res['train'][0]:.1%} | {res['test'][0]:.1%} | {acc_p:.1%} "
            f"| {res['test'][1]:+.3f} |",
            flush=True,
        )


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
