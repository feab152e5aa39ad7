"""Build the bundled sample minutes: fictional councils, written by this project, in the shapes
real ModernGov sites publish (agenda-item, issue and decision pages, full meeting minutes as a web
page, plain text, PDF and Word). Run: python data/samples/build.py (needs fpdf2 and python-docx)."""

from __future__ import annotations

import html
from pathlib import Path

HERE = Path(__file__).parent

CHROME_TOP = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - {council}</title>
<script>window.analytics = {{track: function() {{}}}};</script>
<style>body {{ font-family: sans-serif; }}</style></head>
<body><nav><ul><li><a href="/">Home</a></li><li><a href="/mgListCommittees.aspx">Committees</a></li>
<li><a href="/mgMemberIndex.aspx">Councillors</a></li></ul></nav>
<div id="modgov"><div class="mgContent">
"""
CHROME_BOTTOM = """</div></div>
<footer><p>{council} &copy; 2025. Cookie settings. Accessibility statement.</p></footer>
</body></html>
"""


def paragraphs(body: str) -> str:
    """Blank-line separated text to <p> and <ul> blocks (lines starting '- ' are bullets)."""
    out = []
    for block in body.strip().split("\n\n"):
        lines = block.strip().split("\n")
        if all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{html.escape(l[2:])}</li>" for l in lines) + "</ul>")
        else:
            out.append("<p>" + html.escape(" ".join(lines)) + "</p>")
    return "\n".join(out)


def agenda_item_page(council, title, purpose, minutes, number=None):
    heading = f"{title} (Agenda item {number})" if number else title
    return (CHROME_TOP.format(title="Agenda item", council=council)
            + f"<h1 class=\"mgMainTitleTxt\">Agenda item</h1>\n<h2>{html.escape(heading)}</h2>\n"
            + f"<p>{html.escape(purpose)}</p>\n<h3>Minutes:</h3>\n{paragraphs(minutes)}\n"
            + "<p>Supporting documents:</p><ul><li><a href=\"/documents/s1.pdf\">Report "
              "<span>pdf icon</span> PDF 212 KB</a></li></ul>\n"
            + CHROME_BOTTOM.format(council=council))


def issue_page(council, title, date, committee, number, purpose, minutes):
    return (CHROME_TOP.format(title="Issue - meetings", council=council)
            + "<h1>Issue - meetings</h1>\n"
            + f"<h2>{html.escape(title)}</h2>\n"
            + f"<p>Meeting: {date} - {html.escape(committee)} (Item {number})</p>\n"
            + f"<p>{number} {html.escape(title)} <span>pdf icon</span> PDF 98 KB</p>\n"
            + f"<p>{html.escape(purpose)}</p>\n<p>Additional documents:</p>\n<h3>Minutes:</h3>\n"
            + paragraphs(minutes) + "\n" + CHROME_BOTTOM.format(council=council))


def decision_page(council, title, maker, purpose, decision):
    return (CHROME_TOP.format(title="Decision details", council=council)
            + "<h1>Decision details</h1>\n"
            + f"<h2>{html.escape(title)}</h2>\n<p>Decision Maker: {html.escape(maker)}</p>\n"
            + "<p>Decision status: Approved</p>\n<p>Is Key decision?: Yes</p>\n"
            + f"<p>{html.escape(purpose)}</p>\n{paragraphs(decision)}\n"
            + CHROME_BOTTOM.format(council=council))


def meeting_text(committee, date_line, items):
    """Full minutes of a meeting as plain text: numbered items, each with title and body."""
    lines = [f"{committee} - {date_line}", "", "Venue: Council Chamber, Town Hall", "", "Items",
             "No. Item", ""]
    for number, title, body in items:
        lines += [f"{number}.", "", title, "", "Minutes:", "", body.strip(), ""]
    return "\n".join(lines)


def meeting_page(council, committee, date_line, items):
    parts = [CHROME_TOP.format(title="Agenda and minutes", council=council),
             "<h1>Agenda and minutes</h1>",
             f"<h2>{html.escape(committee)} - {html.escape(date_line)}</h2>",
             "<p>Venue: Committee Room 2, Civic Centre</p><table><tr><th>No.</th><th>Item</th></tr>"]
    for number, title, body in items:
        parts.append(f"<tr><td><p>{number}.</p></td><td><p><strong>{html.escape(title)}</strong></p>"
                     f"<p>Minutes:</p>{paragraphs(body)}</td></tr>")
    parts.append("</table>")
    parts.append(CHROME_BOTTOM.format(council=council))
    return "\n".join(parts)


# ---------------------------------------------------------------- the documents
DOCUMENTS = {}

DOCUMENTS["northmoor-cabinet-improvement-notice.html"] = agenda_item_page(
    "Northmoor County Council",
    "Department for Education Improvement Notice: Six Month Review",
    "To report to Cabinet the outcome of the Department for Education's six month review of progress under the improvement notice issued in October 2024.",
    """The Cabinet Member for Children's Services presented the report. The Department for Education issued an improvement notice to the Council on 14 October 2024 following the inadequate judgement in the ILACS inspection of July 2024.

The DfE improvement adviser, Ms Joanna Pryce, had chaired the Improvement Board since November and her six month review, sent to the Minister on 2 May 2025, found that progress was satisfactory but fragile.

Members raised the following points:

- Average caseloads in the assessment teams were 24 children per social worker, above the target of 18, and had not reduced since January.
- The service still relied on agency social workers for 31 per cent of frontline posts, at an additional cost of £2.4 million this year.
- The Director said that a market supplement of £3,000 for experienced social workers would be reviewed in September.

RESOLVED: That Cabinet notes the six month review and asks for a further report on caseloads and agency use in September 2025.""",
    number=7,
)

DOCUMENTS["northmoor-scrutiny-ofsted-monitoring-visit.html"] = agenda_item_page(
    "Northmoor County Council",
    "Ofsted Monitoring Visit Letter - Children in Care",
    "To consider the letter from Ofsted following the second monitoring visit, held on 11 and 12 March 2025.",
    """The Assistant Director for Children in Care introduced the letter. Inspectors looked at the experiences of children in care aged 11 to 17 and at the stability of their placements.

Ofsted found that the quality of care plans had improved since the inspection but that too many children still waited too long for a permanent home, and that management oversight was not yet consistent across teams.

A member asked how the findings would change the improvement plan. The Assistant Director explained that the plan had been updated to include the two areas for improvement named in the letter.

Members thanked the foster carers who had spoken to inspectors.

RESOLVED: That the Committee notes the findings of the monitoring visit and receives the updated improvement plan at its July meeting.""",
    number=5,
)

DOCUMENTS["riverside-issue-social-work-workforce.html"] = issue_page(
    "Riverside Borough Council",
    "Children's Social Work Recruitment and Retention",
    "17/02/2025", "Children's Services Overview and Scrutiny Panel", 42,
    "To update the Panel on the recruitment and retention of social workers in children's services.",
    """The Head of Workforce presented the report. There were 46 vacant social worker posts out of 210, and staff turnover had reached 23 per cent over the last twelve months.

Members were concerned that newly qualified social workers were being given complex cases too early, and that sickness absence in the safeguarding teams had risen to 14 days per worker.

- The Panel asked why neighbouring boroughs were able to recruit more easily; officers said that pay was up to £4,000 higher there.
- A member asked whether supervision was happening every four weeks as the policy required; the Head of Service said it was in 78 per cent of cases.

RESOLVED: That the Panel supports the proposed retention payment and asks for quarterly updates on vacancies and turnover.""",
)

DOCUMENTS["eastfield-issue-send-area-inspection.html"] = issue_page(
    "Eastfield City Council",
    "Outcome of the SEND Local Area Inspection",
    "09/12/2024", "Cabinet", 88,
    "To note the outcome of the joint Ofsted and Care Quality Commission inspection of the local area partnership's arrangements for children and young people with special educational needs and disabilities.",
    """The Cabinet Member for Education reported that Ofsted and the Care Quality Commission inspected the Eastfield local area partnership from 7 to 11 October 2024.

The inspection found that the partnership's arrangements lead to inconsistent experiences and outcomes for children and young people with SEND, and that the local area partnership must act urgently to address widespread and systemic failings. A priority action plan must be submitted to Ofsted by 20 January 2025.

Members asked how parents would be involved. The Director of Education said that the parent carer forum would co-chair the SEND Improvement Board.

RESOLVED: That Cabinet notes the inspection outcome and approves the establishment of the SEND Improvement Board.""",
)

DOCUMENTS["westhaven-decision-commissioner.html"] = decision_page(
    "Westhaven Metropolitan Borough Council",
    "Response to the Children's Services Commissioner's Report",
    "Cabinet",
    "The Cabinet is asked to respond to the report of the Children's Services Commissioner appointed by the Secretary of State under a statutory direction issued on 3 June 2024.",
    """The Leader explained that the Commissioner, Mr Alan Roe, had recommended that children's social care remain under the Council's control, provided that the Council continues to work with a DfE-appointed improvement partner for at least twelve months.

The statutory direction would remain in place until the Department for Education was satisfied that improvement was sustained.

Decision: (i) to accept the Commissioner's recommendations in full; (ii) to establish a cross-party Improvement Board that reports to the Department for Education every quarter.""",
)

DOCUMENTS["westhaven-cyp-scrutiny-2025-03-10.html"] = meeting_page(
    "Westhaven Metropolitan Borough Council",
    "Children and Young People Scrutiny Committee",
    "Monday, 10th March 2025 6.00 pm",
    [
        ("31", "Apologies for Absence", "Apologies were received from Councillor Mensah and Councillor Doyle."),
        ("32", "Declarations of Interest", "Councillor Farrow declared a personal interest in item 35 as a school governor."),
        ("33", "Minutes of the Previous Meeting", "RESOLVED: That the minutes of the meeting held on 13 January 2025 be confirmed as a correct record."),
        ("34", "Ofsted Focused Visit: The Front Door",
         """The Director of Children's Social Care reported the findings of the Ofsted focused visit of 4 and 5 February 2025, which looked at decisions made at the front door.

Inspectors found that children at risk of significant harm were identified quickly, but that step-down decisions to early help were not always recorded clearly.

A member asked whether the findings would affect the Council's next full inspection. The Director said that the findings would be addressed before then.

RESOLVED: That the findings of the focused visit be noted."""),
        ("35", "School Place Planning",
         """The Head of Admissions presented the annual school place planning report. Demand for secondary places in the west of the borough would exceed supply from September 2027.

RESOLVED: That the Committee supports consultation on the expansion of Heathfield Academy."""),
        ("36", "Work Programme", "The Committee agreed its work programme for the remainder of the municipal year."),
    ],
)

DOCUMENTS["greenvale-corporate-parenting-2025-01-20.txt"] = meeting_text(
    "Corporate Parenting Board",
    "Monday, 20th January 2025 2.00 pm",
    [
        ("12", "Apologies", "Apologies were received from the Virtual School Head."),
        ("13", "Annual Fostering Service Report",
         """The Fostering Team Manager presented the annual report. The service approved 19 new fostering households during the year and lost 11, most of them through retirement.

Members asked how the Council could recruit more foster carers for teenagers. Officers explained that a new campaign with neighbouring councils would begin in the spring.

RESOLVED: That the annual fostering report be noted and the Statement of Purpose approved."""),
        ("14", "Independent Reviewing Service Annual Report",
         """The Head of Quality Assurance presented the report. Independent reviewing officer caseloads averaged 92 children, well above the range of 50 to 70 recommended in the IRO handbook, because two posts had been vacant since the summer.

Members were concerned that reviews were being held late as a result. The Head of Quality Assurance said that an agency IRO had been engaged until the posts were filled.

RESOLVED: That the Board notes the report and asks for an update on IRO caseloads in April 2025."""),
        ("15", "Care Leavers' Local Offer",
         """The Participation Lead presented the refreshed local offer, written with young people from the Children in Care Council.

RESOLVED: That the local offer be endorsed."""),
    ],
)

DOCUMENTS["hillbury-highways-inspection.html"] = agenda_item_page(
    "Hillbury Council",
    "Annual Highway Inspection and Maintenance Report",
    "To review the performance of the highway inspection regime in 2024/25.",
    """The Cabinet Member for Transport presented the report. Safety inspections of 1,240 miles of road had found 6,815 defects, of which 97 per cent were repaired within the target time.

Members asked about the condition of rural footways. Officers explained that the footway resurfacing budget of £1.1 million would be targeted at the worst sections.

Members thanked the highways staff for their work during the winter floods.

RESOLVED: That the report be noted.""",
)

DOCUMENTS["riverside-adult-social-care-cqc.html"] = agenda_item_page(
    "Riverside Borough Council",
    "Adult Social Care: Outcome of the CQC Assessment",
    "To inform Cabinet of the outcome of the Care Quality Commission's assessment of adult social care.",
    """The Cabinet Member for Adult Social Care reported that the Care Quality Commission had assessed the Council's adult social care services as good, with strengths in safeguarding adults and in support for carers.

The assessment found that waiting times for occupational therapy assessments were too long, and that recruitment of home care workers remained difficult across the borough.

RESOLVED: That Cabinet notes the CQC assessment and approves the adult social care improvement plan.""",
)

DOCUMENTS["eastfield-early-help.txt"] = """Agenda item

Early Help and Early Intervention Strategy 2025-2028

To consider the draft Early Help and Early Intervention Strategy for consultation.

Minutes:

The Head of Early Help presented the draft strategy. It sets out how family hubs, health visitors and schools will work together so that families receive help before problems become serious.

The early intervention service supported 1,320 families in 2024, and 84 per cent of them did not need a referral to children's social care within a year.

A member asked how the strategy would reach families who did not use family hubs. Officers explained that outreach workers would visit community venues in each ward.

RESOLVED: That the draft strategy be approved for an eight week consultation.
"""

DOCUMENTS["hillbury-planning-committee-2025-04-07.txt"] = meeting_text(
    "Planning Committee",
    "Monday, 7th April 2025 10.00 am",
    [
        ("101", "Minutes", "The minutes of the meeting held on 3 March 2025 were signed as a correct record."),
        ("102", "Declarations of Interest", "There were no declarations of interest."),
        ("103", "24/01187/FUL Land off Mill Lane, Hillbury",
         """The Committee considered an application for 46 homes on land off Mill Lane. An objector spoke about traffic on Mill Lane and the applicant's agent spoke in support.

RESOLVED: That the application be approved subject to the conditions in the report and a legal agreement for affordable housing."""),
        ("104", "Planning Appeals", "The Committee noted the decisions on four planning appeals, three of which had been dismissed."),
    ],
)

ASHGROVE_PDF_ITEMS = [
    ("61", "Apologies for Absence", "Apologies were received from Councillor Whitlock."),
    ("62", "Children's Services: Statutory Direction and Commissioner's Review",
     """The Chief Executive reported that the Secretary of State had issued a statutory direction to the Council on 9 September 2024, following the Ofsted inspection which judged children's services inadequate in all areas. The direction appointed Dr Ruth Amadi as Children's Services Commissioner to review the Council's capacity to improve.

The Commissioner's review, received on 4 November 2024, recommended that the Council keep its children's services but strengthen leadership and reduce its reliance on interim managers, who held 9 of the 14 senior posts.

Members expressed concern about the high turnover of team managers, six of whom had left in the last six months.

RESOLVED: That Cabinet accepts the Commissioner's recommendations and agrees the leadership recruitment plan."""),
    ("63", "Budget Monitoring: Quarter 2",
     """The Cabinet Member for Finance presented the quarter 2 budget monitoring report, which forecast an overspend of £3.7 million, mostly on placements for children in care.

RESOLVED: That the forecast position be noted."""),
]

SOUTHCLIFFE_DOCX_ITEMS = [
    ("8", "Declarations of Interest", "None were made."),
    ("9", "Ofsted Inspection of Local Authority Children's Services",
     """The Director of Children's Services presented the report on the Ofsted inspection carried out between 13 and 24 January 2025. Ofsted judged the overall effectiveness of children's services to be requires improvement to be good, an improvement on the inadequate judgement of 2022.

Inspectors judged the experiences and progress of care leavers to be good, but found that caseloads in the children in need teams were too high for social workers to visit children as often as their plans required.

RESOLVED: That the Select Committee welcomes the inspection outcome and asks to see the action plan at its next meeting."""),
    ("10", "Youth Service Review",
     """The Head of Youth Services presented the review of youth centres. Attendance had risen by 12 per cent.

RESOLVED: That the review be noted."""),
]


def write_pdf(path: Path, council: str, committee: str, date_line: str, items) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 13)
    pdf.multi_cell(0, 7, f"{council}\nMinutes of the meeting of the {committee} held on {date_line}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for number, title, body in items:
        pdf.set_font("Helvetica", "B", 11)
        pdf.multi_cell(0, 6, f"{number}. {title}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        for para in body.strip().split("\n\n"):
            pdf.multi_cell(0, 5, para.replace("\u2019", "'"), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        pdf.ln(3)
    pdf.output(str(path))


def write_docx(path: Path, council: str, committee: str, date_line: str, items) -> None:
    import docx

    document = docx.Document()
    document.core_properties.created = __import__("datetime").datetime(2025, 2, 5)
    document.add_heading(f"{council}: {committee}", level=1)
    document.add_paragraph(f"Minutes of the meeting held on {date_line}")
    for number, title, body in items:
        document.add_paragraph(f"{number}. {title}")
        for para in body.strip().split("\n\n"):
            document.add_paragraph(para)
    document.save(str(path))


def main() -> None:
    for name, content in DOCUMENTS.items():
        (HERE / name).write_text(content, encoding="utf-8")
    write_pdf(HERE / "ashgrove-cabinet-2024-11-14.pdf", "London Borough of Ashgrove", "Cabinet",
              "Thursday 14 November 2024", ASHGROVE_PDF_ITEMS)
    write_docx(HERE / "southcliffe-children-select-2025-02-05.docx", "Southcliffe Unitary Council",
               "Children's Select Committee", "5 February 2025", SOUTHCLIFFE_DOCX_ITEMS)
    print(f"wrote {len(DOCUMENTS) + 2} sample documents to {HERE}")


if __name__ == "__main__":
    main()
