//! Names as matching sees them: nicknames folded to one name, and a short
//! phonetic code for blocking keys.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Names that count as the same given name. A name may sit in several groups
/// (`chris`), but two names match only when they share a group, so
/// `christopher` and `christine` stay apart. The first name of a group stands
/// for the group in blocking keys.
#[rustfmt::skip]
const NICKNAME_GROUPS: &[&[&str]] = &[
    &["john", "jon", "jonathan", "johnny", "jonny", "jack"],
    &["robert", "rob", "robbie", "bob", "bobby"],
    &["william", "will", "bill", "billy", "willy", "willie"],
    &["elizabeth", "liz", "lizzie", "beth", "betty", "eliza", "libby", "bess"],
    &["katherine", "catherine", "kathryn", "kathleen", "kate", "katie", "kathy", "cathy", "kat"],
    &["michael", "mike", "mick", "mickey", "mikey"],
    &["james", "jim", "jimmy", "jimmie", "jamie"],
    &["thomas", "tom", "tommy"],
    &["david", "dave", "davy"],
    &["daniel", "dan", "danny"],
    &["christopher", "chris"],
    &["christine", "christina", "chris", "chrissy", "tina"],
    &["alexander", "alex", "alec", "sasha", "sandy"],
    &["alexandra", "alex", "sasha", "lexi", "sandy"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy"],
    &["benjamin", "ben", "benny"],
    &["matthew", "matt", "matty"],
    &["nicholas", "nick", "nicky"],
    &["anthony", "tony", "antony"],
    &["stephen", "steven", "steve", "stevie"],
    &["margaret", "peggy", "maggie", "meg", "marge"],
    &["susan", "suzanne", "sue", "susie", "suzy"],
    &["jennifer", "jen", "jenny", "jenn"],
    &["andrew", "andy", "drew"],
    &["edward", "ed", "eddie", "ted", "ned"],
    &["richard", "rich", "rick", "ricky", "richie", "dick"],
    &["patrick", "pat", "paddy"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["timothy", "tim", "timmy"],
    &["joseph", "joe", "joey"],
    &["joshua", "josh"],
    &["gregory", "greg"],
    &["lawrence", "laurence", "larry"],
    &["jeffrey", "geoffrey", "jeff", "geoff"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["kenneth", "ken", "kenny"],
    &["charles", "charlie", "chuck", "chas"],
    &["henry", "harry", "hank", "hal"],
    &["harold", "harry", "hal"],
    &["frederick", "fred", "freddie"],
    &["philip", "phillip", "phil"],
    &["peter", "pete"],
    &["francis", "frank", "frankie"],
    &["frances", "fran", "frankie"],
    &["gerald", "gerry", "jerry"],
    &["raymond", "ray"],
    &["douglas", "doug"],
    &["alfred", "alf", "alfie"],
    &["oliver", "ollie"],
    &["abigail", "abby", "abbie"],
    &["rebecca", "becky", "becca"],
    &["deborah", "debra", "debbie", "deb"],
    &["jessica", "jess", "jessie"],
    &["victoria", "vicky", "vicki", "tori"],
    &["amanda", "mandy"],
    &["pamela", "pam"],
    &["sandra", "sandy"],
    &["barbara", "barb", "babs"],
    &["dorothy", "dot", "dottie", "dolly"],
    &["isabel", "isabella", "izzy", "bella"],
    &["mary", "molly", "polly"],
    &["zachary", "zach", "zack"],
    &["nathaniel", "nathan", "nate"],
    &["jacob", "jake"],
    &["jacqueline", "jackie"],
    &["kimberly", "kimberley", "kim"],
    &["theresa", "teresa", "terri", "terry", "tess", "tessa"],
    &["eleanor", "elinor", "ellie", "nell", "nellie"],
    &["josephine", "jo", "josie"],
    &["joanne", "joanna", "jo"],
    &["penelope", "penny"],
    &["sophia", "sophie"],
    &["olivia", "liv", "livvy"],
    &["charlotte", "lottie", "charlie"],
    &["florence", "flo", "florrie"],
    &["harriet", "hattie"],
    &["emily", "em", "emmy"],
];

/// Each nickname's groups, built once: scoring looks names up for every
/// candidate pair.
static NICKNAMES: LazyLock<HashMap<&'static str, Vec<usize>>> = LazyLock::new(|| {
    let mut groups_by_name: HashMap<&'static str, Vec<usize>> = HashMap::new();
    for (group, names) in NICKNAME_GROUPS.iter().enumerate() {
        for name in names.iter() {
            groups_by_name.entry(name).or_default().push(group);
        }
    }
    groups_by_name
});

/// American Soundex (`Robert` → `R163`), over ASCII letters only; `None` when
/// a name has none, so that two non-Latin names never look alike by accident.
fn soundex(name: &str) -> Option<[u8; 4]> {
    let mut letters = name.bytes().filter(u8::is_ascii_alphabetic);
    let first = letters.next()?;
    let mut code = [b'0'; 4];
    code[0] = first.to_ascii_uppercase();
    let mut filled = 1;
    let mut previous = soundex_digit(first);
    for letter in letters {
        if filled == code.len() {
            break;
        }
        // `h` and `w` do not separate two equal codes, vowels do.
        if matches!(letter, b'h' | b'w') {
            continue;
        }
        let digit = soundex_digit(letter);
        if digit != 0 && digit != previous {
            code[filled] = b'0' + digit;
            filled += 1;
        }
        previous = digit;
    }
    Some(code)
}

fn soundex_digit(letter: u8) -> u8 {
    match letter.to_ascii_lowercase() {
        b'b' | b'f' | b'p' | b'v' => 1,
        b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => 2,
        b'd' | b't' => 3,
        b'l' => 4,
        b'm' | b'n' => 5,
        b'r' => 6,
        _ => 0,
    }
}

/// The name standing for all of `name`'s nicknames, or `name` itself.
pub fn canonical_name(name: &str) -> &str {
    NICKNAMES
        .get(name)
        .and_then(|groups| groups.first())
        .and_then(|&group| NICKNAME_GROUPS.get(group))
        .and_then(|names| names.first())
        .copied()
        .unwrap_or(name)
}

pub fn nicknames_of_one_name(a: &str, b: &str) -> bool {
    match (NICKNAMES.get(a), NICKNAMES.get(b)) {
        (Some(groups_a), Some(groups_b)) => groups_a.iter().any(|group| groups_b.contains(group)),
        _ => false,
    }
}

/// The short code a name contributes to blocking keys: phonetic, after
/// nicknames are mapped to one name. A name without Latin letters is used
/// as it is (spaces removed, so keys stay unambiguous). Spaces are dropped
/// before coding too: `soph ie` is a typo of `sophie`, not two names.
pub fn name_code(name: &str) -> String {
    let canonical = canonical_name(name);
    let joined: String = canonical.chars().filter(|c| *c != ' ').collect();
    match soundex(&joined) {
        Some(code) => code.iter().map(|&byte| char::from(byte)).collect(),
        None => joined.chars().take(8).collect(),
    }
}
